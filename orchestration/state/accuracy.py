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
from orchestration.state.scripts import Queued, ScriptCall, execute_queued, queued_all, script_queued

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

#: Lowest answer validity a provider's weight is scaled by (it never drops to nothing).
_MIN_VALIDITY = 0.05
#: How long a ``once`` marker of :func:`queue_grades` lives by default, in seconds (a job's merge
#: passes its spec's lifetime: once the spec is gone, no run of the merge can grade again).
_ONCE_TTL_S = 86_400


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
    """Add (provider, field, correct) grades in one round trip; False if nothing was written
    (nothing to grade, graded already under ``once``, or Redis unreachable: logged)."""
    grades = queue_grades(prefix, updates, once=once, once_ttl_s=once_ttl_s)
    if grades is None:
        return False
    try:
        return bool(execute_queued(redis, [grades])[0])
    except RedisError as e:
        log.warning("accuracy update dropped (%s)", e)
        return False


def queue_grades(
    prefix: str,
    updates: Iterable[tuple[str, str, bool]],
    *,
    once: str | None = None,
    once_ttl_s: int = _ONCE_TTL_S,
) -> Queued[bool] | None:
    """The grades as one script per provider (its counters live in its own slot), to send in
    another step's round trip: True when any provider's were counted; None when there is nothing
    to grade. ``once`` (the job id) counts them once per job: each provider's marker lives beside
    its counters and is taken in the script that adds them, so a redelivered merge counts
    nothing twice and needs no round trip of its own to learn whether it may grade."""
    counts: dict[str, Counter[str]] = {}
    for provider, field, ok in updates:
        by_field = counts.setdefault(provider, Counter())
        by_field[f"{field}:total"] += 1
        by_field[f"{field}:correct"] += int(bool(ok))
    if not counts:
        return None
    steps = []
    for provider, by_field in sorted(counts.items()):
        keys = [accuracy_key(prefix, provider)]
        if once is not None:
            keys.append(provider_key(prefix, provider, f"accuracy:once:{once}"))
        args: list[Any] = [once_ttl_s]
        for name, n in sorted(by_field.items()):
            if n:
                args += [name, n]
        steps.append(script_queued([ScriptCall("grades.lua", keys, args)]))
    every = queued_all(*steps)
    if every is None:  # no provider to grade (not reached: ``counts`` is not empty)
        return None
    return Queued(every.queue, lambda replies: any(r[0] == 1 for r in every.parse(replies)), every.scripts)
