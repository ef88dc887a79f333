"""A provider call's post-call records (breaker outcome, cost ledger, health) go to Redis as one
script: the same state as the three scripts run one by one, in one round trip; and with Redis
gone the breaker degrades to per-process state as before."""

from __future__ import annotations

import redis

from orchestration.attempts import AttemptDeps, run_attempt
from orchestration.breaker import BreakerState, RedisBreaker, ResilientBreaker, fast_fail_client
from orchestration.config import BreakerConfig, Settings
from orchestration.errors import ServerError
from orchestration.models import Candidate, ProviderResult
from orchestration.state import call_record, cost_call, read_health, record_call, record_cost
from orchestration.state.costs import totals
from orchestration.state.scripts import batch_source
from workers.runtime import PostCall

PX = "quorum:"
NOW = 1_000_000.0
STRICT = BreakerConfig(consecutive_failures=2, min_calls=2, failure_rate=0.5)


def _dump(client: redis.Redis) -> dict[bytes | str, object]:
    """Every key's value (hashes, lists, zsets, strings), for comparing two runs."""
    out: dict[bytes | str, object] = {}
    for key in client.keys("*"):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "hash":
            out[key] = client.hgetall(key)
        elif kind == "list":
            out[key] = client.lrange(key, 0, -1)
        elif kind == "zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            out[key] = client.smembers(key)
        else:
            out[key] = client.get(key)
    return out


def test_a_batch_leaves_the_state_of_its_scripts_run_one_by_one(redis_client: redis.Redis) -> None:
    breaker = RedisBreaker(redis_client, PX, STRICT)
    cost = {"attempt_id": "t1", "provider": "openai", "model": "m", "tokens_in": 10, "tokens_out": 5,
            "micro_usd": 42, "now": NOW}  # fmt: skip
    health = {"ok": False, "now": NOW, "error_kind": "ServerError", "message": "HTTP 500"}

    for _ in range(2):  # the second failure opens the breaker
        breaker.record_failure("openai", NOW, "ServerError")
    record_cost(redis_client, PX, **cost)
    record_call(redis_client, PX, "openai", **health)
    one_by_one = _dump(redis_client)
    redis_client.flushall()

    breaker.record_failure("openai", NOW, "ServerError")
    also = [cost_call(PX, **cost), call_record(PX, "openai", **health)]
    replies = breaker.record_outcome("openai", NOW, "ServerError", also=[c for c in also if c])
    assert replies == [1, 1]  # the ledger counted it; the health script ran
    assert _dump(redis_client) == one_by_one
    assert breaker.state("openai", NOW).state is BreakerState.OPEN
    again = breaker.record_outcome("openai", NOW, "ServerError", also=[cost_call(PX, **cost)])
    assert again == [0]  # a redelivered attempt is not counted twice


def test_a_batch_is_one_script_of_the_files_themselves() -> None:
    source = batch_source(("breaker.lua", "ledger.lua", "health.lua"))
    assert source.count("function(KEYS, ARGV)") == 3
    assert "circuit breaker" in source.lower() and "once-only" in source.lower()


def _evals(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_eval"))


def _deps(client: redis.Redis, breaker: ResilientBreaker) -> AttemptDeps:
    post = PostCall(client, PX, breaker)
    return AttemptDeps(settings=Settings(), provider=lambda name: None, gates=[post.gate()], recorder=post,
                       clock=lambda: NOW)  # fmt: skip


def test_an_attempt_takes_two_scripts_the_acquire_and_one_for_its_records(valkey_redis: redis.Redis) -> None:
    breaker = ResilientBreaker(valkey_redis, PX, STRICT)
    answer = ProviderResult(provider="openai", model="gpt", fields={}, tokens_in=100, tokens_out=10)
    ok = lambda provider, timeout: answer  # noqa: E731
    run_attempt(
        Candidate(provider="openai"),
        ok,
        label="openai",
        task_id="t0",
        deadline=NOW + 30,
        deps=_deps(valkey_redis, breaker),
    )  # fmt: skip (loads the scripts)
    before = _evals(valkey_redis)
    attempt = run_attempt(Candidate(provider="openai"), ok, label="openai", task_id="t1", deadline=NOW + 30,
                          deps=_deps(valkey_redis, breaker))  # fmt: skip
    assert attempt.ok
    assert _evals(valkey_redis) - before == 2
    assert read_health(valkey_redis, PX, "openai").successes == 2
    assert totals(valkey_redis, PX, ["openai"])["openai"].calls == 2


def test_failures_recorded_in_a_batch_open_the_breaker(redis_client: redis.Redis) -> None:
    breaker = ResilientBreaker(redis_client, PX, STRICT)

    def down(provider, timeout):
        raise ServerError("openai: HTTP 500", provider="openai", status=500)

    for i in range(3):
        attempt = run_attempt(Candidate(provider="openai"), down, label="openai", task_id=f"t{i}",
                              deadline=NOW + 30, deps=_deps(redis_client, breaker))  # fmt: skip
    assert attempt.skipped  # the third was refused by the open breaker, without a call
    assert breaker.state("openai", NOW).state is BreakerState.OPEN
    health = read_health(redis_client, PX, "openai")
    assert (health.calls, health.errors) == (2, {"ServerError": 2})


def test_without_redis_the_breaker_degrades_and_the_call_still_answers() -> None:
    gone = fast_fail_client("redis://127.0.0.1:1/0", timeout_s=0.1)
    breaker = ResilientBreaker(gone, PX, STRICT)
    deps = _deps(gone, breaker)
    answer = ProviderResult(provider="openai", model="gpt", fields={}, tokens_in=1, tokens_out=1)
    attempt = run_attempt(Candidate(provider="openai"), lambda provider, timeout: answer, label="openai",
                          task_id="t1", deadline=NOW + 30, deps=deps)  # fmt: skip
    assert attempt.ok and breaker.degraded
