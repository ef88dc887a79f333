"""Daily budgets read from the cost ledger (fakeredis and real Valkey), failing open without Redis."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from orchestration.breaker import fast_fail_client
from orchestration.config import ProviderConfig, Settings
from orchestration.state import BudgetGate, BudgetStatus, budget_status, record_cost

PX = "b:"
DAY1 = datetime(2025, 3, 14, tzinfo=UTC).timestamp()
DAY2 = DAY1 + 86_400
SETTINGS = Settings(
    providers={
        "claude": ProviderConfig(kind="anthropic", model="m1", daily_budget_usd=5.0),
        "openai": ProviderConfig(kind="openai", model="m2"),
    }
)


def spend(
    r: redis.Redis, attempt_id: str, micro_usd: int, now: float = DAY1, provider: str = "claude"
) -> None:
    record_cost(
        r, PX, attempt_id=attempt_id, provider=provider, model="m1",
        tokens_in=0, tokens_out=0, micro_usd=micro_usd, now=now,
    )  # fmt: skip


class NoRedis:
    """A client that fails the test if it is used at all."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected Redis call: {name}")


def test_refuses_once_todays_spend_reaches_the_budget(redis_client: redis.Redis) -> None:
    gate = BudgetGate(redis_client, PX, SETTINGS)
    ticket = gate.admit("claude", DAY1 + 10)
    assert not isinstance(ticket, str)
    ticket.done(DAY1 + 11, None, 1000)  # a no-op: the ledger records spend
    spend(redis_client, "a", 4_999_999, DAY1 + 12)
    assert not isinstance(gate.admit("claude", DAY1 + 13), str)
    spend(redis_client, "b", 1, DAY1 + 14)  # exactly $5.00: spent
    assert gate.admit("claude", DAY1 + 15) == "daily budget $5.00 spent ($5.0000 today)"
    spend(redis_client, "c", 12_300, DAY1 + 16)
    assert gate.admit("claude", DAY1 + 17) == "daily budget $5.00 spent ($5.0123 today)"
    assert gate.refusal("claude", DAY1 + 17) == "daily budget $5.00 spent ($5.0123 today)"
    assert not isinstance(gate.admit("claude", DAY2), str)  # a new UTC day, a new budget
    assert gate.refusal("claude", DAY2) is None


def test_refusal_is_read_only(redis_client: redis.Redis) -> None:
    gate = BudgetGate(redis_client, PX, SETTINGS)
    spend(redis_client, "a", 6_000_000)
    before = sorted(redis_client.keys("*"))
    assert gate.refusal("claude", DAY1 + 1) == "daily budget $5.00 spent ($6.0000 today)"
    assert sorted(redis_client.keys("*")) == before


def test_providers_without_a_budget_cost_no_redis_call() -> None:
    gate = BudgetGate(NoRedis(), PX, SETTINGS)  # type: ignore[arg-type]
    assert not isinstance(gate.admit("openai", DAY1), str)
    assert not isinstance(gate.admit("unknown", DAY1), str)
    assert gate.refusal("openai", DAY1) is None


def test_budget_status(redis_client: redis.Redis) -> None:
    spend(redis_client, "a", 5_012_300)
    spend(redis_client, "b", 250_000, provider="openai")
    spend(redis_client, "c", 99, DAY2)  # tomorrow: not today's
    assert budget_status(redis_client, PX, SETTINGS, DAY1 + 60) == {
        "claude": BudgetStatus(5.0123, 5.0, True),
        "openai": BudgetStatus(0.25, None, False),
    }
    status = budget_status(redis_client, PX, SETTINGS, DAY2 + 60)
    assert status["claude"] == (0.000099, 5.0, False)


def test_fails_open_without_redis(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gate = BudgetGate(fast_fail_client(f"redis://127.0.0.1:{port}", timeout_s=0.2), PX, SETTINGS)
    with caplog.at_level(logging.WARNING, logger="quorum.budget"):
        assert not isinstance(gate.admit("claude", DAY1), str)
        assert not isinstance(gate.admit("claude", DAY1 + 1), str)
        assert gate.refusal("claude", DAY1 + 2) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "daily budgets not enforced" in warnings[0].getMessage()
