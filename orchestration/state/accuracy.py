"""Per-(provider, field) accuracy counters in Redis, read as consensus weights.

Layout: one hash per provider, ``<prefix>{<provider>}:accuracy`` (the hash tag keeps a
provider's keys in one Redis Cluster slot), with fields ``<field>:correct`` and
``<field>:total``. Counts only grow (``HINCRBY``); the weight is the Laplace-smoothed share
``(correct + 1) / (total + 2)``, 0.5 for a provider/field never graded, scaled by the
provider's answer validity (its invalid-output count in health, see :func:`validity`).

Both calls are single pipelined round trips and never fail a job: when Redis is unreachable
``read_weights`` returns the prior for every pair and ``record`` drops the update, each with a
warning in the log.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from orchestration.state.keys import ProviderKeys, provider_key
from orchestration.state.scripts import Queued

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

#: Lowest answer validity a provider's weight is scaled by (it never drops to nothing).
_MIN_VALIDITY = 0.05
#: How long an idempotency marker of :func:`record` lives, in seconds.
_ONCE_TTL_S = 7 * 86_400


def accuracy_key(prefix: str, provider: str) -> str:
    """The hash holding one provider's counters, e.g. ``quorum:{openai}:accuracy``."""
    return provider_key(prefix, provider, "accuracy")


def _int(raw: bytes | str | None) -> int:
    """A counter from HMGET (bytes or str; missing or garbage → 0)."""
    try:
        return int(raw) if raw is not None else 0
    except (TypeError, ValueError):
        return 0


def _queue_counts(pipe: Any, prefix: str, providers: Sequence[str], fields: Sequence[str]) -> None:
    names = [n for f in fields for n in (f"{f}:correct", f"{f}:total")]
    for p in providers:
        pipe.hmget(accuracy_key(prefix, p), names)


def _counts(
    rows: Sequence[Any], providers: Sequence[str], fields: Sequence[str]
) -> dict[tuple[str, str], tuple[int, int]]:
    return {
        (p, f): (_int(row[2 * i]), _int(row[2 * i + 1]))
        for p, row in zip(providers, rows, strict=True)
        for i, f in enumerate(fields)
    }


def read_counts(
    redis: Redis, prefix: str, providers: Sequence[str], fields: Sequence[str]
) -> dict[tuple[str, str], tuple[int, int]]:
    """(correct, total) per (provider, field) in one round trip; raises on Redis errors."""
    providers, fields = list(dict.fromkeys(providers)), list(fields)
    if not providers or not fields:
        return {}
    pipe = redis.pipeline(transaction=False)
    _queue_counts(pipe, prefix, providers, fields)
    return _counts(pipe.execute(), providers, fields)


def laplace_accuracy(correct: int, total: int) -> float:
    """Laplace-smoothed accuracy ``(correct + 1) / (total + 2)``: 0.5 with no history."""
    total = max(total, 0)
    correct = min(max(correct, 0), total)
    return (correct + 1) / (total + 2)


def validity(successes: int, invalid: int) -> float:
    """Share of a provider's answers that were usable, smoothed: ``(ok + 1) / (ok + invalid + 1)``
    (1.0 with no history, 0.5 after one invalid answer), floored at ``_MIN_VALIDITY``."""
    ok, bad = max(successes, 0), max(invalid, 0)
    return max(_MIN_VALIDITY, (ok + 1) / (ok + bad + 1))


def read_weights(
    redis: Redis, prefix: str, providers: Sequence[str], fields: Sequence[str]
) -> dict[tuple[str, str], float]:
    """Consensus weight per (provider, field) in one round trip: Laplace-smoothed accuracy × the
    provider's answer :func:`validity` (invalid or malformed output lowers its weight); the 0.5
    prior for every pair if Redis is unreachable."""
    providers, fields = list(dict.fromkeys(providers)), list(fields)
    if not providers or not fields:
        return {}
    try:
        pipe = redis.pipeline(transaction=False)
        _queue_counts(pipe, prefix, providers, fields)
        for p in providers:
            pipe.hmget(ProviderKeys.of(prefix, p).health, ["successes", "invalid_outputs"])
        rows = pipe.execute()
    except RedisError as e:
        log.warning("accuracy weights unavailable (%s); using the prior", e)
        return {(p, f): laplace_accuracy(0, 0) for p in providers for f in fields}
    counts = _counts(rows[: len(providers)], providers, fields)
    valid = {
        p: validity(_int(row[0]), _int(row[1]))
        for p, row in zip(providers, rows[len(providers) :], strict=True)
    }
    return {(p, f): laplace_accuracy(c, t) * valid[p] for (p, f), (c, t) in counts.items()}


class RecentWeights:
    """:func:`read_weights` at most once per ``ttl_s`` per (providers, fields) in one process.
    A weight moves by one grade per consensus job, so a copy under a second old merges as well as
    a fresh one, and a busy worker's merges (an early-quorum check and the chord body of each
    job) stop costing a round trip each. Bounded: the oldest entries go first."""

    def __init__(self, ttl_s: float = 1.0, max_entries: int = 256) -> None:
        self.ttl_s, self._max = ttl_s, max_entries
        self._entries: dict[tuple[str, ...], tuple[float, dict[tuple[str, str], float]]] = {}
        self._lock = threading.Lock()

    def read(
        self, redis: Redis, prefix: str, providers: Sequence[str], fields: Sequence[str], now: float
    ) -> dict[tuple[str, str], float]:
        """The weights of ``providers`` × ``fields``, read from Redis if this process's copy is
        older than ``ttl_s`` (``now``: a monotonic clock)."""
        key = (prefix, *providers, "", *fields)
        entry = self._entries.get(key)
        if entry is not None and now - entry[0] < self.ttl_s:
            return entry[1]
        weights = read_weights(redis, prefix, providers, fields)
        with self._lock:
            if len(self._entries) >= self._max:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (now, weights)
        return weights


def record_accuracy(
    redis: Redis,
    prefix: str,
    updates: Iterable[tuple[str, str, bool]],
    *,
    once: str | None = None,
    once_ttl_s: int = _ONCE_TTL_S,
) -> bool:
    """Add (provider, field, correct) grades with pipelined HINCRBY; False if nothing written.

    ``once`` (e.g. the job id) makes a redelivered merge task count its grades only once: a
    ``SET NX`` marker is taken first, so a crash between marker and counts loses the grades
    rather than double-counting them.
    """
    grades = queue_grades(prefix, updates)
    if grades is None:
        return False
    try:
        if once is not None and not redis.set(_once_key(prefix, once), 1, nx=True, ex=once_ttl_s):
            return False
        pipe = redis.pipeline(transaction=False)
        grades.queue(pipe)
        pipe.execute()
    except RedisError as e:
        log.warning("accuracy update dropped (%s)", e)
        return False
    return True


def _once_key(prefix: str, once: str) -> str:
    return f"{prefix}accuracy:once:{once}"


def queue_grades(prefix: str, updates: Iterable[tuple[str, str, bool]]) -> Queued[None] | None:
    """The counter increments of :func:`record_accuracy` (without its ``once`` marker), to send
    in another step's round trip; None when there is nothing to grade."""
    totals: Counter[tuple[str, str]] = Counter()
    correct: Counter[tuple[str, str]] = Counter()
    for provider, field, ok in updates:
        totals[provider, field] += 1
        correct[provider, field] += int(bool(ok))
    if not totals:
        return None

    def queue(pipe: Any) -> int:
        n = 0
        for (provider, field), total in sorted(totals.items()):
            key = accuracy_key(prefix, provider)
            pipe.hincrby(key, f"{field}:total", total)
            n += 1
            if correct[provider, field]:
                pipe.hincrby(key, f"{field}:correct", correct[provider, field])
                n += 1
        return n

    return Queued(queue, lambda replies: None)


def queue_grades_once(prefix: str, once: str, once_ttl_s: int = _ONCE_TTL_S) -> Queued[bool]:
    """:func:`record_accuracy`'s ``once`` marker (``SET NX``) for another step's round trip: True
    when this run may send the grades (:func:`queue_grades`), False when a run already did."""
    key = _once_key(prefix, once)

    def queue(pipe: Any) -> int:
        pipe.set(key, 1, nx=True, ex=once_ttl_s)
        return 1

    return Queued(queue, lambda replies: bool(replies[0]))
