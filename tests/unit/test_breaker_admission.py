"""The rule that lets a call start without ``acquire`` on the CLOSED breaker its job's entry just
read (:mod:`orchestration.breaker.admission`), and the gate that applies it (``BreakerGate``)."""

from __future__ import annotations

import math

import pytest
import redis

from orchestration.attempts import AttemptDeps, run_attempt
from orchestration.breaker import BreakerSnapshot, BreakerState, ResilientBreaker
from orchestration.breaker.admission import (
    CLOSED_SNAPSHOT_MAX_AGE_S,
    BreakerReads,
    admits_on_snapshot,
    closed_at,
    closed_permit,
)
from orchestration.config import BreakerConfig, Settings
from orchestration.models import Candidate, ProviderResult
from workers.runtime import PostCall

NOW = 1_000_000.0
PX = "quorum:"
STRICT = BreakerConfig(consecutive_failures=2, min_calls=2, failure_rate=0.5)


def snap(state: BreakerState, source: str = "redis") -> BreakerSnapshot:
    return BreakerSnapshot(
        provider="openai",
        state=state,
        opened_at=None,
        cooldown_until=None,
        consecutive_failures=0,
        window_calls=0,
        window_failures=0,
        backoff_level=0,
        lease_until=None,
        reason=None,
        probe_ready=state is BreakerState.HALF_OPEN,
        source=source,  # type: ignore[arg-type]
    )


def test_only_a_closed_snapshot_from_redis_gives_a_time() -> None:
    assert closed_at(snap(BreakerState.CLOSED), NOW) == NOW
    assert closed_at(snap(BreakerState.HALF_OPEN), NOW) is None
    assert closed_at(snap(BreakerState.OPEN), NOW) is None
    assert closed_at(snap(BreakerState.CLOSED, source="local"), NOW) is None  # degraded breaker
    assert closed_at(None, NOW) is None  # not read by the entry


@pytest.mark.parametrize("age", [0.0, 0.001, CLOSED_SNAPSHOT_MAX_AGE_S, -0.5])
def test_a_fresh_time_admits(age: float) -> None:
    assert admits_on_snapshot(NOW - age, NOW)


@pytest.mark.parametrize(
    "given",
    [
        None,
        NOW - CLOSED_SNAPSHOT_MAX_AGE_S - 0.001,
        NOW - 60,
        NOW + 60,
        math.nan,
        math.inf,
        "1000000.0",
        True,
    ],
)
def test_anything_else_means_acquire(given: object) -> None:
    assert not admits_on_snapshot(given, NOW)


def test_the_permit_is_an_ordinary_calls() -> None:
    permit = closed_permit("openai")
    assert permit and not permit.probe and permit.lease_id is None and permit.state is BreakerState.CLOSED


# --------------------------------------------------------------------------- the gate, on Valkey


def _evals(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_eval"))


def _run(
    client: redis.Redis, breaker: ResilientBreaker, closed: float | None, task_id: str, fail: bool = False
):
    post = PostCall(client, PX, breaker, closed_at=closed)
    deps = AttemptDeps(settings=Settings(), provider=lambda name: None, gates=[post.gate()], recorder=post,
                       clock=lambda: NOW)  # fmt: skip
    answer = ProviderResult(provider="openai", model="gpt", fields={}, tokens_in=100, tokens_out=10)

    def invoke(provider: object, timeout: float) -> ProviderResult:
        if fail:
            raise ConnectionError("down")
        return answer

    return run_attempt(Candidate(provider="openai"), invoke, label="openai", task_id=task_id,
                       deadline=NOW + 30, deps=deps)  # fmt: skip


def test_a_fresh_closed_read_skips_the_acquire_and_still_records(valkey_redis: redis.Redis) -> None:
    breaker = ResilientBreaker(valkey_redis, PX, STRICT)
    _run(valkey_redis, breaker, None, "t0")  # loads the scripts
    before = _evals(valkey_redis)
    assert _run(valkey_redis, breaker, NOW - 0.01, "t1").ok
    assert _evals(valkey_redis) - before == 1  # the records only, no acquire
    before = _evals(valkey_redis)
    _run(valkey_redis, breaker, NOW - 5, "t2")  # stale: acquires as before
    assert _evals(valkey_redis) - before == 2
    # failures admitted on the snapshot count as ordinary calls: two of them open the breaker
    _run(valkey_redis, breaker, NOW, "t3", fail=True)
    _run(valkey_redis, breaker, NOW, "t4", fail=True)
    assert breaker.state("openai", NOW).state is BreakerState.OPEN


def test_an_open_breaker_with_a_stale_read_is_refused(valkey_redis: redis.Redis) -> None:
    breaker = ResilientBreaker(valkey_redis, PX, STRICT)
    breaker.force_open("openai", NOW, cooldown_s=60)
    attempt = _run(valkey_redis, breaker, NOW - 5, "t5")
    assert attempt.skipped and not attempt.ok


# --------------------------------------------------------------------------- the signed field


def test_the_read_time_is_signed_and_left_out_when_none() -> None:
    from workers.app import app
    from workers.canvas import failover_attempt
    from workers.signing import MAC_FIELD, valid

    key = b"k" * 32
    sig = failover_attempt(app, key, "job-1", 0, "openai", 0, [], closed_at=NOW)
    kwargs = dict(sig.kwargs)
    assert kwargs["closed_at"] == NOW and valid(key, "quorum.call", "job-1.h0", kwargs)
    assert not valid(key, "quorum.call", "job-1.h0", {**kwargs, "closed_at": NOW + 60})  # forged: refused
    without = dict(failover_attempt(app, key, "job-1", 0, "openai", 0, []).kwargs)
    assert "closed_at" not in without and valid(key, "quorum.call", "job-1.h0", without)
    assert "closed_at" not in sig.options["link_error"][0]["kwargs"]  # the errback does not carry it
    assert MAC_FIELD in kwargs


def test_breaker_reads_read_what_is_missing_once_and_date_each_read() -> None:
    reads_made: list[list[str]] = []

    def read(providers: list[str], now: float) -> dict[str, BreakerSnapshot]:
        reads_made.append(providers)
        states = {"openai": BreakerState.CLOSED, "gemini": BreakerState.OPEN, "local": BreakerState.CLOSED}
        return {p: snap(states[p], source="local" if p == "local" else "redis") for p in providers}

    reads = BreakerReads(read, {"claude": snap(BreakerState.CLOSED)}, read_at=NOW - 0.5)
    assert set(reads.ensure(["claude", "openai", "gemini"], NOW)) == {"claude", "openai", "gemini"}
    reads.ensure(["openai", "claude"], NOW + 1)  # all read already: no read
    reads.ensure(["local"], NOW + 2)
    assert reads_made == [["gemini", "openai"], ["local"]]  # the missing ones, together, once
    assert reads.closed_at("claude") == NOW - 0.5  # the sender's own read, at its time
    assert reads.closed_at("openai") == NOW  # read here, at the time of that read
    assert reads.closed_at("gemini") is None  # not CLOSED
    assert reads.closed_at("local") is None  # a per-process (degraded) snapshot
    assert reads.closed_at("never-read") is None
