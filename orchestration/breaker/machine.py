"""The circuit breaker's rules as a pure state machine: the reference that ``lua/breaker.lua`` mirrors.

No I/O and no clock here: every step takes ``now`` from its caller. ``LocalBreaker`` runs these
functions in-process; the Lua script performs the very same steps atomically in Redis; one test
suite (plus a differential property test) runs against both, so the two cannot drift apart.

Rules (per provider):

- CLOSED: every call is allowed. Counted outcomes go into a sliding window (``t > now -
  window_s``); a failure opens the breaker when ``consecutive_failures`` failures follow each
  other, or when the window holds ``>= min_calls`` calls and a failure share ``>= failure_rate``.
- OPEN: calls are refused until ``cooldown_until``; the first caller after it moves the breaker
  to HALF_OPEN and holds the single probe lease (``now + probe_lease_s``).
- HALF_OPEN: everyone else is refused while the lease is live; an expired lease is taken over.
  The probe's success closes the breaker (window, streak and backoff reset); its failure
  re-opens it for ``cooldown_s * backoff**level`` (capped at ``max_cooldown_s``). An ignored
  outcome from the probe (e.g. a 400) only releases the lease. Outcomes from anyone but the
  current lease holder are stale and ignored.
- Auth errors open at once for ``auth_cooldown_s`` (or extend an open breaker to it), from any
  caller in any state; error kinds with ``counts_for_breaker = False`` never count.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Literal

from orchestration.config import BreakerConfig
from orchestration.errors import ERROR_TYPES, AuthError


class BreakerState(StrEnum):
    """The three states of a circuit breaker (values as stored in Redis)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(StrEnum):
    """How one call's outcome affects the breaker (decided in Python, passed to the Lua)."""

    SUCCESS = "success"
    FAILURE = "failure"
    AUTH = "auth"
    IGNORED = "ignored"


# Step decisions, identical strings in the Lua script.
ALLOWED, PROBE, REFUSED = "allowed", "probe", "refused"
RECORDED, IGNORED, RELEASED, DONE = "recorded", "ignored", "released", "done"

Source = Literal["redis", "local"]


@dataclass(frozen=True)
class Acquire:
    """Ask to call the provider; ``lease_id`` names the probe lease if this caller gets it."""

    lease_id: str
    name: ClassVar[str] = "acquire"


@dataclass(frozen=True)
class Record:
    """Record one call's outcome; ``lease_id`` is the probe's lease (None for other callers)."""

    outcome: Outcome
    lease_id: str | None = None
    name: ClassVar[str] = "record"


@dataclass(frozen=True)
class ForceOpen:
    """Open now for ``cooldown_s`` (None: the current backoff cool-down)."""

    cooldown_s: float | None = None
    name: ClassVar[str] = "force_open"


@dataclass(frozen=True)
class Reset:
    """Force CLOSED and forget counters and backoff."""

    name: ClassVar[str] = "reset"


#: One operation of the breaker, run as one atomic step (``name`` is the Lua script's op).
Operation = Acquire | Record | ForceOpen | Reset


def error_kind_of(error: str | BaseException) -> str:
    """The error kind string of an exception (its class name) or the string itself."""
    return error if isinstance(error, str) else type(error).__name__


def classify(error_kind: str | None) -> Outcome:
    """Map an error kind to its breaker outcome; unknown kinds count as failures (fail safe)."""
    if error_kind is None:
        return Outcome.SUCCESS
    cls = ERROR_TYPES.get(error_kind)
    if cls is None:
        return Outcome.FAILURE
    if issubclass(cls, AuthError):
        return Outcome.AUTH
    return Outcome.FAILURE if cls.counts_for_breaker else Outcome.IGNORED


def cooldown_for(config: BreakerConfig, level: int) -> float:
    """Cool-down after ``level`` failed probes: ``cooldown_s * backoff**level``, capped."""
    cooldown = config.cooldown_s
    for _ in range(level):  # repeated multiplication: bit-identical to the Lua loop
        cooldown *= config.backoff
        if cooldown >= config.max_cooldown_s:
            break
    return min(cooldown, config.max_cooldown_s)


@dataclass
class Core:
    """Mutable state of one provider's breaker (the Redis hash + window zsets, in memory)."""

    state: BreakerState = BreakerState.CLOSED
    opened_at: float | None = None
    cooldown_until: float | None = None
    level: int = 0
    consecutive: int = 0
    lease_id: str | None = None
    lease_until: float | None = None
    reason: str | None = None
    calls: list[float] = field(default_factory=list)  # sorted outcome times in the window
    failures: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """What one atomic step did; the Lua script replies with exactly these fields."""

    decision: str
    state: BreakerState
    cooldown_until: float | None = None
    level: int = 0
    lease_until: float | None = None
    retry_at: float | None = None
    reason: str | None = None
    from_state: BreakerState | None = None  # set only when the step changed the state
    note: str | None = None


@dataclass(frozen=True)
class Permit:
    """The answer to "may I call this provider?"; truthy when allowed."""

    provider: str
    allowed: bool
    state: BreakerState
    probe: bool = False
    lease_id: str | None = None
    lease_until: float | None = None
    reason: str | None = None
    retry_at: float | None = None

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Transition:
    """One state change, reported by the step that caused it (logged exactly once)."""

    provider: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    at: float | None = None
    cooldown_until: float | None = None


@dataclass(frozen=True)
class BreakerSnapshot:
    """A read-only view of one breaker for status pages and ``quorum status``."""

    provider: str
    state: BreakerState
    opened_at: float | None
    cooldown_until: float | None
    consecutive_failures: int
    window_calls: int
    window_failures: int
    backoff_level: int
    lease_until: float | None
    reason: str | None
    probe_ready: bool
    source: Source = "redis"


def _step(
    core: Core,
    decision: str,
    *,
    retry_at: float | None = None,
    reason: str | None = None,
    from_state: BreakerState | None = None,
    note: str | None = None,
) -> Step:
    """The step's result, read off ``core`` after it changed (as the Lua ``reply`` does)."""
    return Step(
        decision=decision,
        state=core.state,
        cooldown_until=core.cooldown_until,
        level=core.level,
        lease_until=core.lease_until,
        retry_at=retry_at,
        reason=reason,
        from_state=from_state,
        note=note,
    )


def _open(core: Core, now: float, cooldown: float, reason: str) -> None:
    """Enter OPEN: start the cool-down, drop the lease, the streak and the window."""
    core.state = BreakerState.OPEN
    core.opened_at = now
    core.cooldown_until = now + cooldown
    core.reason = reason
    core.consecutive = 0
    core.lease_id = core.lease_until = None
    core.calls.clear()
    core.failures.clear()


def _close(core: Core) -> None:
    """Enter CLOSED with a clean slate: no window, streak, backoff level or lease."""
    core.state = BreakerState.CLOSED
    core.opened_at = core.cooldown_until = core.lease_until = None
    core.lease_id = core.reason = None
    core.level = core.consecutive = 0
    core.calls.clear()
    core.failures.clear()


def _trim(core: Core, cutoff: float) -> None:
    """Drop outcomes at or before ``cutoff`` (``ZREMRANGEBYSCORE -inf cutoff`` in the Lua)."""
    del core.calls[: bisect.bisect_right(core.calls, cutoff)]
    del core.failures[: bisect.bisect_right(core.failures, cutoff)]


def acquire(core: Core, config: BreakerConfig, now: float, lease_id: str) -> Step:
    """May the caller call now? Moves OPEN → HALF_OPEN and hands out the single probe lease."""
    if core.state is BreakerState.CLOSED:
        return _step(core, ALLOWED)
    if core.state is BreakerState.OPEN:
        until = core.cooldown_until if core.cooldown_until is not None else 0.0
        if now < until:
            return _step(core, REFUSED, reason="open", retry_at=until)
        core.state = BreakerState.HALF_OPEN
        core.lease_id, core.lease_until = lease_id, now + config.probe_lease_s
        return _step(core, PROBE, from_state=BreakerState.OPEN, reason="cooldown_elapsed")
    if core.lease_until is not None and now < core.lease_until:
        return _step(core, REFUSED, reason="probe_in_flight", retry_at=core.lease_until)
    note = "lease_expired" if core.lease_id is not None else None
    core.lease_id, core.lease_until = lease_id, now + config.probe_lease_s
    return _step(core, PROBE, note=note)


def record(core: Core, config: BreakerConfig, now: float, outcome: Outcome, lease_id: str | None) -> Step:
    """Record one call's outcome; may open, re-open or close the breaker."""
    is_probe = core.state is BreakerState.HALF_OPEN and lease_id is not None and lease_id == core.lease_id
    if outcome is Outcome.IGNORED:
        if is_probe:  # inconclusive probe: let the next caller probe instead
            core.lease_id = core.lease_until = None
            return _step(core, RELEASED)
        return _step(core, IGNORED)
    if outcome is Outcome.AUTH:
        if core.state is BreakerState.OPEN:
            current = core.cooldown_until if core.cooldown_until is not None else now
            core.cooldown_until = max(current, now + config.auth_cooldown_s)
            core.reason = "auth"
            return _step(core, RECORDED)
        previous = core.state
        _open(core, now, config.auth_cooldown_s, "auth")
        return _step(core, RECORDED, from_state=previous, reason="auth")
    if core.state is BreakerState.CLOSED:
        _trim(core, now - config.window_s)
        bisect.insort(core.calls, now)
        if outcome is Outcome.SUCCESS:
            core.consecutive = 0
            return _step(core, RECORDED)
        bisect.insort(core.failures, now)
        core.consecutive += 1
        if core.consecutive >= config.consecutive_failures:
            reason = "consecutive_failures"
        elif (
            len(core.calls) >= config.min_calls
            and len(core.failures) / len(core.calls) >= config.failure_rate
        ):
            reason = "failure_rate"
        else:
            return _step(core, RECORDED)
        _open(core, now, cooldown_for(config, core.level), reason)
        return _step(core, RECORDED, from_state=BreakerState.CLOSED, reason=reason)
    if is_probe:
        if outcome is Outcome.SUCCESS:
            _close(core)
            return _step(core, RECORDED, from_state=BreakerState.HALF_OPEN, reason="probe_succeeded")
        core.level += 1
        _open(core, now, cooldown_for(config, core.level), "probe_failed")
        return _step(core, RECORDED, from_state=BreakerState.HALF_OPEN, reason="probe_failed")
    return _step(core, IGNORED)  # a stale outcome from a call admitted before the breaker opened


def force_open(core: Core, config: BreakerConfig, now: float, cooldown_s: float | None) -> Step:
    """Open now for ``cooldown_s`` (default: the current backoff level's cool-down)."""
    previous = core.state
    cooldown = cooldown_s if cooldown_s is not None else cooldown_for(config, core.level)
    _open(core, now, cooldown, "forced")
    changed = previous if previous is not BreakerState.OPEN else None
    return _step(core, DONE, from_state=changed, reason="forced")


def reset(core: Core) -> Step:
    """Force CLOSED and forget the window, streak, backoff and lease."""
    previous = core.state
    _close(core)
    changed = previous if previous is not BreakerState.CLOSED else None
    return _step(core, DONE, from_state=changed, reason="reset")


def apply(core: Core, config: BreakerConfig, op: Operation, now: float) -> Step:
    """Run one operation, exactly as the Lua script does."""
    match op:
        case Acquire(lease_id=lease_id):
            return acquire(core, config, now, lease_id)
        case Record(outcome=outcome, lease_id=lease_id):
            return record(core, config, now, outcome, lease_id)
        case ForceOpen(cooldown_s=cooldown_s):
            return force_open(core, config, now, cooldown_s)
        case Reset():
            return reset(core)
    raise TypeError(f"not a breaker operation: {op!r}")


def snapshot(
    core: Core,
    config: BreakerConfig,
    provider: str,
    now: float,
    *,
    window_calls: int | None = None,
    window_failures: int | None = None,
    source: Source = "local",
) -> BreakerSnapshot:
    """Describe ``core`` at ``now`` (window counts from ``core`` unless given, e.g. by ZCOUNT)."""
    cutoff = now - config.window_s
    if window_calls is None:
        window_calls = len(core.calls) - bisect.bisect_right(core.calls, cutoff)
    if window_failures is None:
        window_failures = len(core.failures) - bisect.bisect_right(core.failures, cutoff)
    if core.state is BreakerState.OPEN:
        ready = core.cooldown_until is None or now >= core.cooldown_until
    else:
        ready = core.state is BreakerState.HALF_OPEN and (core.lease_until is None or now >= core.lease_until)
    return BreakerSnapshot(
        provider=provider,
        state=core.state,
        opened_at=core.opened_at,
        cooldown_until=core.cooldown_until,
        consecutive_failures=core.consecutive,
        window_calls=window_calls,
        window_failures=window_failures,
        backoff_level=core.level,
        lease_until=core.lease_until,
        reason=core.reason,
        probe_ready=ready,
        source=source,
    )
