"""Internal messages are authenticated: a producer (who holds no fleet secret) cannot run a
provider call, a merge or a failover hop by name, cannot overwrite a job's answer, and cannot
re-use a job id; legitimate jobs keep working and their messages stay lean."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from celery import states

from orchestration.data import load_emails
from orchestration.errors import AllProvidersFailedError
from tests.integration.fleet import Fleet
from workers.signing import mac

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

EMAILS = load_emails()
EMAIL = EMAILS[0]
ORDER = ["claude", "openai", "gemini"]
WRONG_KEY = b"not-the-fleet-secret-0123456789"


def _failover(fleet: Fleet, **kw: Any) -> Any:
    kwargs = {"text": EMAIL.text, "strategy": "failover", "providers": ORDER, "use_cache": False, **kw}
    return fleet.send(**kwargs)


def _refused(fleet: Fleet, task_id: str, what: str = "refused", count: int = 1, timeout: float = 15) -> None:
    """Wait until the workers logged ``count`` refusals of ``task_id``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [(fleet.workdir / f"{n}.log").read_text(errors="replace") for n in fleet.workers]
        lines = [line for log in logs for line in log.splitlines()]
        if sum(what in line and task_id in line for line in lines) >= count:
            return
        time.sleep(0.1)
    pytest.fail(f"the workers did not log {what!r} {count}x for {task_id}")


def _keys(fleet: Fleet) -> set[bytes]:
    """The keys a task could write: results, per-job keys, the cache."""
    found: set[bytes] = set()
    for pattern in ("celery-task-meta-*", "quorum:job:*", "quorum:cache:*"):
        found |= set(fleet.redis.scan_iter(match=pattern, count=1000))
    return found


def _forge(fleet: Fleet, task: str, task_id: str, kwargs: dict[str, Any], args: tuple[Any, ...] = ()) -> None:
    fleet.app.send_task(task, args=args, kwargs=kwargs, task_id=task_id, queue="quorum")


def test_forged_internal_messages_are_refused_unrun(clean: Fleet, emulator):
    for name in ORDER:
        emulator.set_down(name)
    victim = _failover(clean)
    with pytest.raises(AllProvidersFailedError):
        victim.get(timeout=30)
    for name in ORDER:
        emulator.set_down(name, False)
    calls = {p: emulator.requests(p) for p in ORDER}
    keys = _keys(clean)

    call = {"job_id": victim.id, "index": 0, "mode": "failover", "hop": 0, "attempts": []}
    merge = {"job_id": victim.id, "skipped": []}
    hop = {"job_id": victim.id, "index": 0, "hop": 0, "attempts": []}
    planned = {
        "role": "candidate",
        "label": "x",
        "candidate": {"provider": "claude"},
        "system": "",
        "prompt": "hi",
    }
    gen = {"call": planned, "deadline": time.time() + 30}
    forged = []
    for task, kwargs, args in (
        ("quorum.call", call, ()),
        ("quorum.merge", merge, ([],)),
        ("quorum.failover_next", hop, ()),
        ("quorum.gen_call", gen, ()),
        ("quorum.gen_select", {"job_id": victim.id, "progress": {}}, ([],)),
    ):
        # no MAC; a MAC under another key; and (for the call) the id of the failed job itself
        for task_id, signed in ((f"forged-{uuid.uuid4()}", dict(kwargs)), (victim.id, dict(kwargs))):
            signed["mac"] = mac(WRONG_KEY, task, task_id, kwargs) if task_id == victim.id else None
            _forge(clean, task, task_id, {k: v for k, v in signed.items() if v is not None}, args)
            forged.append(task_id)
    for task_id in set(forged):
        _refused(clean, task_id, count=forged.count(task_id))

    assert {p: emulator.requests(p) for p in ORDER} == calls  # no provider call ran
    assert _keys(clean) == keys  # no result, job key or cache entry written
    assert clean.app.AsyncResult(victim.id).state == states.FAILURE  # not turned into SUCCESS
    assert clean.redis.type("quorum") in (b"list", b"none")  # the queue is still a list
    assert len(clean.app.control.ping(timeout=1.0)) == len(clean.workers)  # every worker alive
    # and the fleet still answers a real job
    assert _failover(clean).get(timeout=30)["chosen"] == "claude"


def test_a_used_or_malformed_job_id_cannot_overwrite_an_answer(clean: Fleet):
    job = _failover(clean)
    answer = job.get(timeout=30)
    # the same id again, with a request that would fail: ignored, the answer stays
    clean.app.send_task("quorum.extract", kwargs={"text": "x", "strategy": "coin_flip"}, task_id=job.id)
    _refused(clean, job.id, "already used")
    assert clean.app.AsyncResult(job.id).get(timeout=5) == answer
    # an id shaped like an internal task's (or a key): nothing is stored under it
    for bad in (f"{job.id}.h0", "{quorum}", "x" * 200):
        clean.app.send_task("quorum.extract", kwargs={"text": "x"}, task_id=bad)
        _refused(clean, bad[:50], "not a valid job id")
        assert not clean.redis.exists(f"celery-task-meta-{bad}")


def test_a_two_hop_failover_job_writes_the_email_into_redis_at_most_three_times(clean: Fleet, emulator):
    """14.1: the text travels once (the producer's message) and is stored once (the job's spec);
    the hops and their errbacks carry the job id only. Counted as bytes the server received."""
    emulator.set_down("claude")
    text = "\n\n".join(e.text for e in EMAILS * 2)[:50_000]  # distinct emails: no easy compression
    before = int(clean.redis.info("stats")["total_net_input_bytes"])
    result = _failover(clean, text=text).get(timeout=30)
    time.sleep(0.5)  # the last acks and events
    written = int(clean.redis.info("stats")["total_net_input_bytes"]) - before
    assert result["chosen"] == "openai" and len(result["attempts"]) == 2
    assert written <= 3 * len(text.encode()), f"{written} bytes for a {len(text)}-char email"


def test_a_worker_without_the_fleet_secret_refuses_to_start(fleet: Fleet):
    env = {k: v for k, v in fleet.env.items() if not k.startswith("QUORUM_FLEET_SECRET")}
    cmd = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-P", "threads", "-c", "1",
           "--without-gossip", "--without-mingle", "-n", "nosecret@%h"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no fleet secret: set QUORUM_FLEET_SECRET" in done.stdout + done.stderr
