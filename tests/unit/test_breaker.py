"""One circuit-breaker suite, run on the in-process machine, fakeredis and a real Valkey server."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from orchestration.breaker import Breaker, BreakerState, LocalBreaker, RedisBreaker, ResilientBreaker
from orchestration.config import BreakerConfig
from orchestration.errors import AuthError, BadRequestError, ServerError

P = "openai"
T0 = 1_000_000.0
CFG = BreakerConfig(
    window_s=60,
    min_calls=4,
    failure_rate=0.5,
    consecutive_failures=3,
    cooldown_s=10,
    max_cooldown_s=50,
    backoff=2,
    auth_cooldown_s=1000,
    probe_lease_s=5,
)

MakeBreaker = Callable[..., Breaker]
CLIENT_FIXTURES = {"fakeredis": "fake_redis", "valkey": "valkey_redis"}  # see conftest.py


@pytest.fixture(params=["local", "fakeredis", "valkey", "resilient"])
def make(request: pytest.FixtureRequest) -> MakeBreaker:
    """A factory of breakers of one flavour; every breaker it makes shares one state store."""
    if request.param == "resilient":  # the degrading wrapper, with Redis up
        client = request.getfixturevalue("valkey_redis")
        return lambda **overrides: ResilientBreaker(client, "t:", CFG.model_copy(update=overrides))
    if request.param == "local":
        shared: dict[str, LocalBreaker] = {}

        def local(**overrides: float) -> Breaker:
            key = repr(sorted(overrides.items()))
            return shared.setdefault(key, LocalBreaker(CFG.model_copy(update=overrides)))

        return local
    client = request.getfixturevalue(CLIENT_FIXTURES[request.param])
    return lambda **overrides: RedisBreaker(client, "t:", CFG.model_copy(update=overrides))


@pytest.fixture
def breaker(make: MakeBreaker) -> Breaker:
    return make()


def fail(b: Breaker, t: float, n: int = 1, kind: str = "ServerError") -> None:
    for i in range(n):
        b.record_failure(P, t + i * 0.001, kind)


def open_at(b: Breaker, t: float) -> None:
    fail(b, t, CFG.consecutive_failures)
    assert b.state(P, t + 1).state is BreakerState.OPEN


def test_closed_allows_every_caller(breaker: Breaker) -> None:
    permits = [breaker.acquire(P, T0 + i) for i in range(5)]
    assert all(permits) and not any(p.probe for p in permits)
    assert breaker.state(P, T0).state is BreakerState.CLOSED


def test_opens_on_consecutive_failures(breaker: Breaker) -> None:
    assert breaker.record_failure(P, T0, "ServerError") is None
    assert breaker.record_failure(P, T0 + 1, ServerError("boom")) is None
    t = breaker.record_failure(P, T0 + 2, "ProviderTimeoutError")
    assert t is not None and (t.from_state, t.to_state) == (BreakerState.CLOSED, BreakerState.OPEN)
    assert t.reason == "consecutive_failures" and t.cooldown_until == T0 + 2 + 10
    permit = breaker.acquire(P, T0 + 3)
    assert not permit and permit.reason == "circuit breaker open" and permit.retry_at == T0 + 12


def test_success_breaks_the_streak(make: MakeBreaker) -> None:
    b = make(min_calls=100)
    fail(b, T0, 2)
    b.record_success(P, T0 + 1)
    fail(b, T0 + 2, 2)
    snap = b.state(P, T0 + 3)
    assert snap.state is BreakerState.CLOSED and snap.consecutive_failures == 2


def test_opens_on_failure_rate_only_after_min_calls(make: MakeBreaker) -> None:
    b = make(consecutive_failures=100)
    b.record_failure(P, T0, "ServerError")
    b.record_success(P, T0 + 1)
    b.record_failure(P, T0 + 2, "ServerError")  # 2/3 failed, but only 3 calls < min_calls
    assert b.state(P, T0 + 2).state is BreakerState.CLOSED
    b.record_success(P, T0 + 3)  # 4 calls, 2 failed: a success never opens
    assert b.state(P, T0 + 3).state is BreakerState.CLOSED
    t = b.record_failure(P, T0 + 4, "ServerError")  # 5 calls, 3 failed
    assert t is not None and t.reason == "failure_rate"


def test_failure_rate_threshold_is_inclusive(make: MakeBreaker) -> None:
    b = make(consecutive_failures=100)
    for i, ok in enumerate([True, False, True]):
        (b.record_success(P, T0 + i) if ok else b.record_failure(P, T0 + i, "ServerError"))
    t = b.record_failure(P, T0 + 3, "ServerError")  # 2 of 4 failed: exactly failure_rate
    assert t is not None and t.reason == "failure_rate"


def test_old_failures_fall_out_of_the_window(make: MakeBreaker) -> None:
    b = make(consecutive_failures=100)
    fail(b, T0, 3)
    later = T0 + 60.002  # the three failures are now exactly window_s old or older: out
    for i in range(3):
        b.record_success(P, later + i)
    assert b.record_failure(P, later + 3, "ServerError") is None
    snap = b.state(P, later + 3)
    assert snap.state is BreakerState.CLOSED
    assert (snap.window_calls, snap.window_failures) == (4, 1)
    assert b.state(P, later + 3 + 60).window_calls == 0


@pytest.mark.parametrize("kind", ["BadRequestError", "InvalidRequestError", "ProviderUnavailableError"])
def test_request_errors_do_not_count(breaker: Breaker, kind: str) -> None:
    fail(breaker, T0, 10, kind)
    snap = breaker.state(P, T0 + 1)
    assert snap.state is BreakerState.CLOSED
    assert (snap.window_calls, snap.consecutive_failures) == (0, 0)
    fail(breaker, T0 + 2, 2)
    breaker.record_failure(P, T0 + 3, BadRequestError("bad"))  # nor does it break the streak
    assert breaker.record_failure(P, T0 + 4, "ServerError") is not None


def test_unknown_error_kinds_count(breaker: Breaker) -> None:
    fail(breaker, T0, 3, "KeyError")
    assert breaker.state(P, T0 + 1).state is BreakerState.OPEN


def test_auth_opens_at_once_with_the_long_cooldown(breaker: Breaker) -> None:
    t = breaker.record_failure(P, T0, AuthError("bad key"))
    assert t is not None and t.reason == "auth" and t.cooldown_until == T0 + 1000
    assert not breaker.acquire(P, T0 + 999)
    assert breaker.acquire(P, T0 + 1000).probe


def test_auth_extends_an_open_breaker(breaker: Breaker) -> None:
    open_at(breaker, T0)
    assert breaker.record_failure(P, T0 + 1, "AuthError") is None  # no new transition
    snap = breaker.state(P, T0 + 2)
    assert snap.cooldown_until == T0 + 1001 and snap.reason == "auth"


def test_open_refuses_until_the_cooldown_ends(breaker: Breaker) -> None:
    breaker.force_open(P, T0, cooldown_s=10)
    for dt in (0, 5, 9.999):
        permit = breaker.acquire(P, T0 + dt)
        assert not permit and permit.retry_at == T0 + 10 and permit.state is BreakerState.OPEN
    assert breaker.acquire(P, T0 + 10).probe


def test_exactly_one_probe_after_the_cooldown(breaker: Breaker) -> None:
    breaker.force_open(P, T0, cooldown_s=10)
    permits = [breaker.acquire(P, T0 + 10 + i * 0.5) for i in range(8)]
    probes = [p for p in permits if p.probe]
    assert len(probes) == 1 and permits[0].probe
    assert probes[0].lease_id and probes[0].lease_until == T0 + 15
    for p in permits[1:]:
        assert not p and "probe in flight" in (p.reason or "") and p.retry_at == T0 + 15


def test_expired_lease_lets_another_caller_probe(breaker: Breaker) -> None:
    breaker.force_open(P, T0, cooldown_s=10)
    first = breaker.acquire(P, T0 + 10)
    assert not breaker.acquire(P, T0 + 14.9)
    second = breaker.acquire(P, T0 + 15)
    assert second.probe and second.lease_id != first.lease_id
    assert breaker.record_success(P, T0 + 16, first) is None  # stale probe: ignored
    assert breaker.state(P, T0 + 16).state is BreakerState.HALF_OPEN
    t = breaker.record_success(P, T0 + 17, second)
    assert t is not None and t.to_state is BreakerState.CLOSED


def test_probe_failure_reopens_with_backoff_capped(breaker: Breaker) -> None:
    breaker.force_open(P, T0, cooldown_s=10)
    now, expected = T0 + 10, [20.0, 40.0, 50.0, 50.0]
    for cooldown in expected:
        probe = breaker.acquire(P, now)
        assert probe.probe
        t = breaker.record_failure(P, now + 1, "ServerError", probe)
        assert t is not None and t.reason == "probe_failed"
        assert t.cooldown_until == now + 1 + cooldown
        now = t.cooldown_until
    assert breaker.state(P, now).backoff_level == 4


def test_probe_success_closes_and_resets_backoff(breaker: Breaker) -> None:
    breaker.force_open(P, T0, cooldown_s=10)
    probe = breaker.acquire(P, T0 + 10)
    breaker.record_failure(P, T0 + 11, "OverloadedError", probe)  # level 1, cool-down 20
    probe = breaker.acquire(P, T0 + 31)
    t = breaker.record_success(P, T0 + 32, probe)
    assert t is not None and (t.from_state, t.to_state) == (BreakerState.HALF_OPEN, BreakerState.CLOSED)
    snap = breaker.state(P, T0 + 32)
    assert (snap.backoff_level, snap.consecutive_failures, snap.window_calls) == (0, 0, 0)
    fail(breaker, T0 + 40, 3)
    assert breaker.state(P, T0 + 41).cooldown_until == pytest.approx(T0 + 40.002 + 10)


def test_inconclusive_probe_releases_the_lease(breaker: Breaker) -> None:
    breaker.force_open(P, T0, cooldown_s=10)
    probe = breaker.acquire(P, T0 + 10)
    assert breaker.record_failure(P, T0 + 11, "BadRequestError", probe) is None
    nxt = breaker.acquire(P, T0 + 11)
    assert nxt.probe and breaker.state(P, T0 + 11).state is BreakerState.HALF_OPEN


def test_auth_error_from_the_probe_reopens_for_the_auth_cooldown(breaker: Breaker) -> None:
    breaker.force_open(P, T0, cooldown_s=10)
    probe = breaker.acquire(P, T0 + 10)
    t = breaker.record_failure(P, T0 + 11, "AuthError", probe)
    assert t is not None and t.reason == "auth" and t.cooldown_until == T0 + 1011
    assert breaker.state(P, T0 + 11).backoff_level == 0


def test_stale_outcomes_do_not_move_an_open_breaker(breaker: Breaker) -> None:
    early = breaker.acquire(P, T0)
    open_at(breaker, T0 + 1)
    assert breaker.record_success(P, T0 + 2, early) is None
    breaker.acquire(P, T0 + 20)  # half-open now; a non-probe success is stale too
    assert breaker.record_success(P, T0 + 21, early) is None
    assert breaker.state(P, T0 + 21).state is BreakerState.HALF_OPEN


def test_reset_closes_and_forgets(breaker: Breaker) -> None:
    breaker.force_open(P, T0, cooldown_s=10)
    probe = breaker.acquire(P, T0 + 10)
    breaker.record_failure(P, T0 + 11, "ServerError", probe)
    t = breaker.reset(P)
    assert t is not None and (t.from_state, t.to_state, t.reason) == (
        BreakerState.OPEN,
        BreakerState.CLOSED,
        "reset",
    )
    snap = breaker.state(P, T0 + 12)
    assert snap.state is BreakerState.CLOSED and snap.backoff_level == 0
    assert breaker.acquire(P, T0 + 12)
    assert breaker.reset(P) is None  # already closed: no transition


def test_force_open_and_probe_ready(breaker: Breaker) -> None:
    t = breaker.force_open(P, T0, cooldown_s=7)
    assert t is not None and t.reason == "forced"
    assert breaker.force_open(P, T0 + 1, cooldown_s=7) is None  # already open
    assert not breaker.state(P, T0 + 7).probe_ready
    assert breaker.state(P, T0 + 8).probe_ready


def test_providers_are_independent(breaker: Breaker) -> None:
    open_at(breaker, T0)
    assert breaker.acquire("claude", T0 + 1)
    states = breaker.states([P, "claude"], T0 + 1)
    assert states[P].state is BreakerState.OPEN and states["claude"].state is BreakerState.CLOSED


def test_refusal_is_a_read_only_check(breaker: Breaker) -> None:
    assert breaker.refusal(P, T0) is None
    open_at(breaker, T0)
    why = breaker.refusal(P, T0 + 1)
    assert why is not None and why.startswith("circuit breaker open (consecutive_failures)")
    assert breaker.refusal(P, T0 + 11) is None  # the cool-down is over: worth a probe
    assert breaker.state(P, T0 + 11).state is BreakerState.OPEN  # ...and nothing changed
    breaker.acquire(P, T0 + 11)
    assert "probe in flight" in (breaker.refusal(P, T0 + 12) or "")


def test_permit_of_another_provider_is_refused(breaker: Breaker) -> None:
    permit = breaker.acquire("claude", T0)
    with pytest.raises(ValueError):
        breaker.record_success(P, T0, permit)


def test_transitions_are_logged_exactly_once(breaker: Breaker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="quorum.breaker")
    open_at(breaker, T0)
    breaker.acquire(P, T0 + 5)  # a refusal is not a transition
    probe = breaker.acquire(P, T0 + 11)
    for i in range(3):
        breaker.acquire(P, T0 + 12 + i)
    breaker.record_success(P, T0 + 15, probe)
    breaker.record_success(P, T0 + 16, probe)  # a repeated report changes nothing
    moves = [(r.from_state, r.to_state, r.levelno) for r in caplog.records if hasattr(r, "to_state")]
    assert moves == [
        ("closed", "open", logging.WARNING),
        ("open", "half_open", logging.INFO),
        ("half_open", "closed", logging.INFO),
    ]
    assert all(r.provider == P for r in caplog.records if hasattr(r, "to_state"))
