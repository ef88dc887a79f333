"""Admitting a call on the breaker snapshot its sender just read, without ``acquire``.

In CLOSED state ``acquire`` is a pure read that answers ALLOWED. A job's entry reads the
breakers of the providers it may call anyway (to plan), a few milliseconds before the first
call(s) start, and so does a failed failover hop's errback for the next hop; when it read a
breaker CLOSED, the call it sends carries the time of that read
(``closed_at``, inside the signed message) and the call admits itself on it, saving one Redis
round trip, as long as the read is fresh (:data:`CLOSED_SNAPSHOT_MAX_AGE_S`). Anything else
(no time, an unusable one, a stale read, a breaker that was not CLOSED or was read from a
degraded per-process breaker) means: acquire as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from orchestration.breaker.machine import BreakerSnapshot, BreakerState, Permit

__all__ = ["CLOSED_SNAPSHOT_MAX_AGE_S", "BreakerReads", "admits_on_snapshot", "closed_at", "closed_permit"]

#: How old (seconds, either way: the reading and the calling worker's clocks may differ a little)
#: a CLOSED breaker read by the job's entry may be for its call to skip ``acquire``. The trade: a
#: breaker that opens within this bound after the read still lets through the calls whose
#: entries read it CLOSED within it, exactly like calls already in flight when it opened (their
#: outcomes are then recorded as stale, non-probe outcomes and change nothing). One second bounds
#: that to the calls started in the second before the breaker opened; a queued or delayed call
#: (a countdown, a busy fleet) acquires as before.
CLOSED_SNAPSHOT_MAX_AGE_S = 1.0


def closed_at(snapshot: BreakerSnapshot | None, read_at: float) -> float | None:
    """``read_at`` (when the snapshot was read, or earlier) if ``snapshot`` says CLOSED and was
    read from the shared breaker in Redis; else None (the call must acquire)."""
    if snapshot is None or snapshot.state is not BreakerState.CLOSED or snapshot.source != "redis":
        return None
    return float(read_at)


def admits_on_snapshot(closed_at: object, now: float, max_age_s: float = CLOSED_SNAPSHOT_MAX_AGE_S) -> bool:
    """True when a call may start without ``acquire``: ``closed_at`` is a finite time at most
    ``max_age_s`` away from ``now``. Anything else (None, a non-number, NaN, a stale or a far
    future time) is False: acquire as before."""
    if isinstance(closed_at, bool) or not isinstance(closed_at, int | float):
        return False
    if not math.isfinite(closed_at):
        return False
    return abs(now - closed_at) <= max_age_s


def closed_permit(provider: str) -> Permit:
    """The permit ``acquire`` gives in CLOSED state: allowed, not a probe, no lease (its outcome
    is recorded as an ordinary call's)."""
    return Permit(provider=provider, allowed=True, state=BreakerState.CLOSED)


class BreakerReads:
    """The breaker snapshots a sender has read, each with when it was read: planning reads the
    ones it still lacks (``read``: e.g. ``ResilientBreaker.states``), and a call sent on a
    snapshot read CLOSED carries that time (:meth:`closed_at`)."""

    def __init__(
        self,
        read: Callable[[list[str], float], dict[str, BreakerSnapshot]],
        snapshots: Mapping[str, BreakerSnapshot],
        read_at: float,
    ) -> None:
        self._read = read
        self.snapshots = dict(snapshots)
        self._read_at = dict.fromkeys(self.snapshots, read_at)

    def ensure(self, providers: Iterable[str], now: float) -> dict[str, BreakerSnapshot]:
        """Read the breakers of ``providers`` not read yet (together, at ``now``); every snapshot."""
        missing = sorted(set(providers) - self.snapshots.keys())
        if missing:
            self.snapshots.update(self._read(missing, now))
            self._read_at.update(dict.fromkeys(missing, now))
        return self.snapshots

    def closed_at(self, provider: str) -> float | None:
        """When ``provider``'s breaker was read CLOSED from Redis (None: its call acquires)."""
        snapshot = self.snapshots.get(provider)
        return None if snapshot is None else closed_at(snapshot, self._read_at[provider])
