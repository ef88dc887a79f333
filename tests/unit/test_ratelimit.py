"""Fleet-wide RPM/TPM token buckets (fakeredis and real Valkey), with a fake clock throughout."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from orchestration.attempts import Ticket
from orchestration.breaker import fast_fail_client
from orchestration.config import ProviderConfig, Settings
from orchestration.state import RateLimitGate

PX = "r:"
T0 = 1_000_000.0
SETTINGS = Settings(
    providers={
        "claude": ProviderConfig(kind="anthropic", model="m", rpm=60),
        "openai": ProviderConfig(kind="openai", model="m", tpm=1000),
        "gemini": ProviderConfig(kind="gemini", model="m", rpm=6, tpm=600),
        "free": ProviderConfig(kind="openai_compatible", model="m"),
    }
)


def admitted(result: Ticket | str) -> bool:
    return not isinstance(result, str)


class NoRedis:
    """A client that fails the test if it is used beyond registering a script."""

    def register_script(self, source: str) -> object:
        return object()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected Redis call: {name}")


@pytest.fixture
def gate(redis_client: redis.Redis) -> RateLimitGate:
    return RateLimitGate(redis_client, PX, SETTINGS)


def test_rpm_bucket_drains_and_refills_at_limit_per_minute(gate: RateLimitGate) -> None:
    assert all(admitted(gate.admit("claude", T0)) for _ in range(60))  # capacity = the limit
    assert gate.admit("claude", T0) == "rate limit: 60 requests/min exhausted, next slot in 1.0 s"
    assert gate.admit("claude", T0 + 0.2) == "rate limit: 60 requests/min exhausted, next slot in 0.8 s"
    assert admitted(gate.admit("claude", T0 + 1.0))  # 60/min = one per second
    assert not admitted(gate.admit("claude", T0 + 1.5))
    assert admitted(gate.admit("claude", T0 + 2.0))
    # a long pause refills to capacity, never beyond
    assert sum(admitted(gate.admit("claude", T0 + 600)) for _ in range(100)) == 60


def test_refusal_is_read_only(gate: RateLimitGate, redis_client: redis.Redis) -> None:
    for _ in range(60):
        gate.admit("claude", T0)
    before = {k: redis_client.hgetall(k) for k in redis_client.keys("*")}
    assert gate.refusal("claude", T0 + 0.2) == "rate limit: 60 requests/min exhausted, next slot in 0.8 s"
    assert gate.refusal("claude", T0 + 1.0) is None
    assert gate.refusal("claude", T0 + 1.0) is None  # peeking took nothing
    assert {k: redis_client.hgetall(k) for k in redis_client.keys("*")} == before
    assert gate.refusal("openai", T0) is None  # an untouched bucket is full


def test_tpm_is_debited_after_the_call(gate: RateLimitGate) -> None:
    ticket = gate.admit("openai", T0)
    assert admitted(ticket) and admitted(gate.admit("openai", T0))  # TPM only: no request count
    assert not isinstance(ticket, str)
    ticket.done(T0 + 1, None, 1500)  # 1000 + 1/s x 1000/60 refill capped at 1000, minus 1500
    assert gate.admit("openai", T0 + 1) == "rate limit: 1000 tokens/min exhausted, next slot in 30.0 s"
    assert gate.admit("openai", T0 + 30.9) == "rate limit: 1000 tokens/min exhausted, next slot in 0.1 s"
    assert admitted(gate.admit("openai", T0 + 31.1))


def test_a_call_never_sent_gives_its_request_back(gate: RateLimitGate) -> None:
    tickets = [gate.admit("gemini", T0) for _ in range(6)]
    assert gate.admit("gemini", T0) == "rate limit: 6 requests/min exhausted, next slot in 10.0 s"
    last = tickets[-1]
    assert not isinstance(last, str)
    last.done(T0, "ProviderUnavailableError", 0)  # a later gate refused: nothing was sent
    assert admitted(gate.admit("gemini", T0))
    tickets[0].done(T0, "ServerError", 0)  # sent and failed: the request counts
    assert not admitted(gate.admit("gemini", T0))


def test_unlimited_providers_cost_no_redis_call() -> None:
    gate = RateLimitGate(NoRedis(), PX, SETTINGS)  # type: ignore[arg-type]
    ticket = gate.admit("free", T0)
    assert not isinstance(ticket, str)
    ticket.done(T0, None, 10_000)
    assert gate.admit("unknown", T0) is not None and gate.refusal("free", T0) is None


def test_eight_threads_never_exceed_capacity(valkey_redis: redis.Redis) -> None:
    gate = RateLimitGate(valkey_redis, PX, SETTINGS)
    barrier = threading.Barrier(8)
    counts: list[int] = []

    def worker() -> None:
        barrier.wait()
        counts.append(sum(admitted(gate.admit("claude", T0 + 0.5)) for _ in range(20)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=5)
    assert len(counts) == 8 and sum(counts) == 60  # 160 tries, capacity 60, same instant


def test_keys_share_the_providers_slot(gate: RateLimitGate) -> None:
    assert gate.keys("claude") == ["r:{claude}:ratelimit:rpm", "r:{claude}:ratelimit:tpm"]
    assert len({key_slot(k.encode()) for k in [*gate.keys("claude"), "r:{claude}:breaker"]}) == 1


def test_fails_open_without_redis(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gate = RateLimitGate(fast_fail_client(f"redis://127.0.0.1:{port}", timeout_s=0.2), PX, SETTINGS)
    with caplog.at_level(logging.WARNING, logger="quorum.ratelimit"):
        for i in range(3):
            ticket = gate.admit("gemini", T0 + i)
            assert not isinstance(ticket, str)
            ticket.done(T0 + i, None, 100)  # the debit is lost quietly
        assert gate.refusal("gemini", T0) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rate limits not enforced" in warnings[0].getMessage()
