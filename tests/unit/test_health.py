"""Provider health counters in Redis (fakeredis and real Valkey)."""

from __future__ import annotations

import socket

import pytest
import redis

from orchestration.breaker import BreakerSnapshot, BreakerState, fast_fail_client
from orchestration.errors import AuthError
from orchestration.state import clear_health, read_health, record_call
from orchestration.state.health import LATENCY_SAMPLES, p95, read_all, record_failure, record_success

PX = "h:"
T0 = 1_000_000.0


def test_empty_provider_reads_as_zeroes(redis_client: redis.Redis) -> None:
    h = read_health(redis_client, PX, "openai")
    assert (h.calls, h.successes, h.errors, h.latency_ewma_ms, h.latency_p95_ms) == (0, 0, {}, None, None)
    assert h.healthy and h.state == "closed" and h.last_error is None


def test_counts_and_errors_by_class(redis_client: redis.Redis) -> None:
    for i in range(3):
        record_success(redis_client, PX, "openai", T0 + i, 100.0)
    record_failure(redis_client, PX, "openai", T0 + 3, "ServerError", "HTTP 500")
    record_failure(redis_client, PX, "openai", T0 + 4, "ServerError", "HTTP 502")
    record_failure(redis_client, PX, "openai", T0 + 5, AuthError("bad key"))
    h = read_health(redis_client, PX, "openai")
    assert (h.calls, h.successes) == (6, 3)
    assert h.errors == {"ServerError": 2, "AuthError": 1}
    assert h.success_rate == 0.5
    assert h.last_error == "bad key"


def test_ewma_and_p95(redis_client: redis.Redis) -> None:
    for i, ms in enumerate([100.0, 200.0, 300.0]):
        record_success(redis_client, PX, "claude", T0 + i, ms)
    h = read_health(redis_client, PX, "claude")
    assert h.latency_ewma_ms == pytest.approx(0.2 * 300 + 0.8 * (0.2 * 200 + 0.8 * 100))
    clear_health(redis_client, PX, "claude")
    for ms in range(100, 0, -1):  # 100 .. 1, out of order on purpose
        record_success(redis_client, PX, "claude", T0, float(ms))
    assert read_health(redis_client, PX, "claude").latency_p95_ms == 95.0


def test_p95_keeps_only_the_newest_samples(redis_client: redis.Redis) -> None:
    for ms in range(1, LATENCY_SAMPLES + 51):  # 1..250: only 51..250 are kept
        record_success(redis_client, PX, "gemini", T0, float(ms))
    assert redis_client.llen("h:{gemini}:health:latency") == LATENCY_SAMPLES
    assert read_health(redis_client, PX, "gemini").latency_p95_ms == 240.0


def test_p95_nearest_rank() -> None:
    assert p95([]) is None
    assert p95([7.0]) == 7.0
    assert p95(float(x) for x in range(1, 21)) == 19.0


def test_last_success_and_failure(redis_client: redis.Redis) -> None:
    record_success(redis_client, PX, "openai", T0 + 10, 50.0)
    record_success(redis_client, PX, "openai", T0 + 5, 50.0)  # a late report never goes back in time
    record_failure(redis_client, PX, "openai", T0 + 20, "ProviderTimeoutError", "x" * 1000)
    record_failure(redis_client, PX, "openai", T0 + 15, "ServerError", "older")
    h = read_health(redis_client, PX, "openai")
    assert h.last_success_at == T0 + 10 and h.last_failure_at == T0 + 20
    assert h.last_error == "x" * 300
    assert h.errors == {"ProviderTimeoutError": 1, "ServerError": 1}


def test_record_call_ignores_failure_latency(redis_client: redis.Redis) -> None:
    assert record_call(redis_client, PX, "local", ok=True, now=T0, latency_ms=40.0)
    record_call(
        redis_client,
        PX,
        "local",
        ok=False,
        now=T0 + 1,
        latency_ms=30_000.0,
        error_kind="ProviderTimeoutError",
        message="timed out",
    )
    h = read_health(redis_client, PX, "local")
    assert (h.calls, h.successes, h.latency_ewma_ms, h.latency_p95_ms) == (2, 1, 40.0, 40.0)
    assert h.errors == {"ProviderTimeoutError": 1} and h.last_error == "timed out"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_record_call_is_best_effort_when_redis_is_down() -> None:
    dead = fast_fail_client(f"redis://127.0.0.1:{free_port()}", timeout_s=0.2)
    assert record_call(dead, PX, "openai", ok=True, now=T0, latency_ms=1.0) is False
    with pytest.raises(redis.ConnectionError):
        record_success(dead, PX, "openai", T0, 1.0)  # the explicit calls do raise


def test_read_all_with_breaker_states(redis_client: redis.Redis) -> None:
    record_success(redis_client, PX, "openai", T0, 10.0)
    record_failure(redis_client, PX, "claude", T0, "OverloadedError", "529")
    snap = BreakerSnapshot(
        provider="claude",
        state=BreakerState.OPEN,
        opened_at=T0,
        cooldown_until=T0 + 30,
        consecutive_failures=0,
        window_calls=0,
        window_failures=0,
        backoff_level=0,
        lease_until=None,
        reason="consecutive_failures",
        probe_ready=False,
    )
    got = read_all(redis_client, PX, ["openai", "claude", "gemini"], {"claude": snap, "gemini": "half_open"})
    assert list(got) == ["openai", "claude", "gemini"]
    assert got["openai"].healthy and got["openai"].successes == 1
    assert not got["claude"].healthy and got["claude"].state == "open"
    assert got["claude"].reason == "breaker open: consecutive_failures"
    assert got["gemini"].state == "half_open" and not got["gemini"].healthy
    assert got["gemini"].calls == 0
