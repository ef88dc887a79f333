"""Degraded mode: the shared Redis breaker, falling back to a per-process one while Redis is down.

:class:`ResilientBreaker` runs every step on Redis. When Redis raises a connection or timeout
error it logs one WARNING, seeds an in-process :class:`LocalBreaker` with the last shared state
it saw (so an open breaker stays open) and carries on with the same rules per process. It tries
Redis again at most every ``retry_interval_s``; on the first success it logs one WARNING
("resynchronised"), discards the per-process state and uses the shared state again. Outcomes
recorded while degraded stay local: the shared state in Redis is authoritative.

If a step times out after Redis ran it, its effect stays in Redis but its transition is not
logged (nobody saw the reply); that is the price of not blocking the fleet on Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from orchestration.breaker.breakers import Breaker, LocalBreaker, RedisBreaker
from orchestration.breaker.machine import BreakerSnapshot, BreakerState, Operation, Step
from orchestration.config import BreakerConfig
from orchestration.state.scripts import Queued, ScriptCall

log = logging.getLogger("quorum.breaker")

#: Errors that mean "Redis is unreachable" (anything else is a bug and propagates).
DEGRADING_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)

T = TypeVar("T")


def fast_fail_client(url: str, timeout_s: float = 0.5) -> Redis:
    """A client for breaker state that fails within ``timeout_s`` instead of retrying for seconds."""
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


class ResilientBreaker(Breaker):
    """A Redis breaker that degrades to per-process state while Redis is unreachable."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        config: BreakerConfig,
        *,
        retry_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config)
        self.shared = RedisBreaker(redis, prefix, config)
        self.local = LocalBreaker(config)
        self.retry_interval_s = retry_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._degraded = False
        self._retry_at = 0.0
        self._known: dict[str, tuple[BreakerState, float | None, int]] = {}
        self._where = threading.local()

    @property
    def degraded(self) -> bool:
        """True while decisions are made per process because Redis is unreachable."""
        return self._degraded

    def _scope(self) -> str:
        """Where this thread's last step ran (the log line of its transition says so)."""
        return getattr(self._where, "scope", "shared")

    def _route(self, shared: Callable[[], T], local: Callable[[], T]) -> T:
        """Run ``shared`` on Redis unless degraded and not yet due for a retry; else ``local``."""
        if not self._degraded or self._clock() >= self._retry_at:
            try:
                result = shared()
            except DEGRADING_ERRORS as e:
                self._degrade(e)
            else:
                if self._degraded:
                    self._resync()
                self._where.scope = "shared"
                return result
        self._where.scope = "per-process"
        return local()

    def step(self, provider: str, op: Operation, now: float) -> Step:
        def shared() -> Step:
            step = self.shared.step(provider, op, now)
            self._known[provider] = (step.state, step.cooldown_until, step.level)
            return step

        def local() -> Step:
            return self.local.step(provider, op, now)

        return self._route(shared, local)

    def _step_also(
        self,
        provider: str,
        op: Operation,
        now: float,
        also: Sequence[ScriptCall],
        extra: Queued[Any] | None = None,
    ) -> tuple[Step, list[Any] | None, list[Any]]:
        def shared() -> tuple[Step, list[Any] | None, list[Any]]:
            step, replies, ran = self.shared._step_also(provider, op, now, also, extra)
            self._known[provider] = (step.state, step.cooldown_until, step.level)
            return step, replies, ran

        def local() -> tuple[Step, list[Any] | None, list[Any]]:
            return self.local.step(provider, op, now), None, []

        return self._route(shared, local)

    def _snapshot(self, provider: str, now: float) -> BreakerSnapshot:
        return self.states([provider], now)[provider]

    def states(self, providers: Iterable[str], now: float) -> dict[str, BreakerSnapshot]:
        """Snapshots from Redis, or from this process while degraded (``source`` says which)."""
        names = list(providers)

        def shared() -> dict[str, BreakerSnapshot]:
            snaps = self.shared.states(names, now)
            for name, s in snaps.items():
                self._known[name] = (s.state, s.cooldown_until, s.backoff_level)
            return snaps

        return self._route(shared, lambda: self.local.states(names, now))

    def queue_states(self, providers: Iterable[str], now: float) -> Queued[dict[str, BreakerSnapshot]]:
        """:meth:`states` for a round trip shared with other reads: the shared breakers' reads,
        or none while degraded and not yet due to retry Redis (then this process's snapshots).
        The round trip's client decides what an outage does: it raises to the caller (the reads
        it rides with cannot do without Redis either)."""
        names = list(providers)
        if not names:
            return Queued(lambda pipe: 0, lambda replies: {})
        if self._degraded and self._clock() < self._retry_at:
            return Queued(lambda pipe: 0, lambda replies: self._local_states(names, now))
        shared = self.shared.queue_states(names, now)

        def parse(replies: list[Any]) -> dict[str, BreakerSnapshot]:
            snaps = shared.parse(replies)
            for name, s in snaps.items():
                self._known[name] = (s.state, s.cooldown_until, s.backoff_level)
            if self._degraded:
                self._resync()
            self._where.scope = "shared"
            return snaps

        return Queued(shared.queue, parse)

    def _local_states(self, names: list[str], now: float) -> dict[str, BreakerSnapshot]:
        self._where.scope = "per-process"
        return self.local.states(names, now)

    def _degrade(self, error: Exception) -> None:
        """Switch to per-process state seeded from the last shared state seen; log once."""
        with self._lock:
            self._retry_at = self._clock() + self.retry_interval_s
            if self._degraded:
                return
            self._degraded = True
            self.local.clear()
            for provider, (state, cooldown_until, level) in list(self._known.items()):
                self.local.seed(provider, state, cooldown_until, level)
        log.warning(
            "Redis unreachable (%s: %s): circuit breakers degraded to per-process state",
            type(error).__name__,
            error,
            extra={"breaker_scope": "per-process"},
        )

    def _resync(self) -> None:
        """Back on Redis: drop the per-process state and log once."""
        with self._lock:
            if not self._degraded:
                return
            self._degraded = False
            self.local.clear()
        log.warning(
            "Redis reachable again: circuit breakers resynchronised with the shared state",
            extra={"breaker_scope": "shared"},
        )
