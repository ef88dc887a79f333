"""Differential test: the Lua script and the pure-Python machine take identical steps."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestration.breaker import (
    Acquire,
    ForceOpen,
    LocalBreaker,
    Operation,
    Outcome,
    Record,
    RedisBreaker,
    Reset,
)
from orchestration.config import BreakerConfig

P = "gemini"
T0 = 1_700_000_000.123
# Awkward floats on purpose: every value must round-trip through Redis bit for bit.
CFG = BreakerConfig(
    window_s=20,
    min_calls=2,
    failure_rate=0.5,
    consecutive_failures=4,
    cooldown_s=3.3,
    max_cooldown_s=40,
    backoff=1.7,
    auth_cooldown_s=100,
    probe_lease_s=5,
)
# Weighted so that runs reach probes, re-opens and backoff often; reset/force_open are rare.
OPS = ["acquire"] * 5 + ["success"] * 3 + ["failure"] * 5 + ["ignored", "auth", "force_open", "reset"]
STEPS = [0.0, 0.1, 0.7, 1.0, 3.3, 4.9, 5.0, 11.0, 20.0, 21.3]

operations = st.lists(
    st.tuples(st.sampled_from(OPS), st.sampled_from(STEPS), st.integers(0, 3)),
    min_size=10,
    max_size=80,
)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
@given(ops=operations)
@pytest.mark.parametrize("backend", ["fakeredis", "valkey"])
def test_lua_mirrors_the_reference_machine(request: pytest.FixtureRequest, backend: str, ops: list) -> None:
    client = request.getfixturevalue({"fakeredis": "fake_redis", "valkey": "valkey_redis"}[backend])
    client.flushall()
    local, shared = LocalBreaker(CFG), RedisBreaker(client, "eq:", CFG)
    now, leases = T0, []
    for i, (op, dt, pick) in enumerate(ops):
        now += dt
        held = leases[-1 - pick] if pick < len(leases) else None  # usually the newest lease
        step: Operation
        if op == "acquire":
            leases.append(f"lease-{i}")
            step = Acquire(leases[-1])
        elif op == "force_open":
            step = ForceOpen(None if pick % 2 else 2.2)
        elif op == "reset":
            step = Reset()
        else:
            step = Record(Outcome(op), held)
        expected = local.step(P, step, now)
        got = shared.step(P, step, now)
        assert got == expected, f"step {i} ({op} at +{now - T0:.3f})"
        mirror = dataclasses.replace(local.state(P, now), source="redis")
        assert shared.state(P, now) == mirror, f"snapshot after step {i}"
