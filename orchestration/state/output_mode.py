"""The structured-output mode that works for each provider, shared by the fleet in Redis.

Per provider, a hash ``{prefix}{provider}:output_mode`` with ``mode``, ``server`` (a
fingerprint of base URL and model: a record about another server is ignored) and ``at``. It
expires after :data:`_MODE_TTL_S`, so an upgraded server is probed again. While Redis is
unreachable each process remembers on its own. Each process keeps what it read for
:data:`RECALL_CACHE_S`, so a provider's calls do not each read the hash before their request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import get_args

from redis import Redis

from orchestration.providers.output_modes import LocalModeMemory, OutputMode
from orchestration.state.keys import provider_key
from orchestration.state.ratelimit import REDIS_ERRORS
from orchestration.state.scripts import text

log = logging.getLogger("quorum.output_mode")

#: How long a remembered mode holds before ``auto`` probes the server again (one day).
_MODE_TTL_S = 86_400
_MODES: frozenset[str] = frozenset(get_args(OutputMode))

#: How long (seconds) a process reuses the record it read (or wrote) before reading it again.
#: The remembered mode is only the rung ``auto`` tries first: a mode the server stopped accepting
#: is refused and the ladder moves on within the same call (and the new mode is remembered), so
#: a record another worker changed, or a ``FLUSH`` of the key, is seen here at most this late at
#: the price of, at worst, one refused request per call meanwhile; a record this process writes
#: is seen here at once.
RECALL_CACHE_S = 5.0


def output_mode_key(prefix: str, provider: str) -> str:
    """``quorum:{local}:output_mode``."""
    return provider_key(prefix, provider, "output_mode")


class RedisModeMemory:
    """A fleet-wide :class:`~orchestration.providers.output_modes.ModeMemory` in Redis."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        cache_s: float = RECALL_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis, self.prefix = redis, prefix
        self._local = LocalModeMemory()
        self._cache_s, self._clock = cache_s, clock
        self._read: dict[str, tuple[float, str | None, str | None]] = {}  # provider → (until, server, mode)
        self._lock = threading.Lock()

    def recall(self, provider: str, server: str) -> OutputMode | None:
        """The fleet's mode for ``provider`` at ``server`` (as read at most ``cache_s`` ago);
        this process's while Redis is down."""
        now = self._clock()
        cached = self._read.get(provider)
        if cached is not None and now < cached[0]:
            _, on, mode = cached
        else:
            try:
                record = self.redis.hgetall(output_mode_key(self.prefix, provider))
            except REDIS_ERRORS:
                return self._local.recall(provider, server)
            fields = {text(k): text(v) for k, v in record.items()}  # type: ignore[union-attr]
            on, mode = fields.get("server"), fields.get("mode")
            self._keep(provider, on, mode, now)
        if on != server or mode not in _MODES:
            return None
        return mode  # type: ignore[return-value]

    def _keep(self, provider: str, server: str | None, mode: str | None, now: float) -> None:
        if self._cache_s > 0:
            with self._lock:
                self._read[provider] = (now + self._cache_s, server, mode)

    def remember(self, provider: str, server: str, mode: OutputMode) -> None:
        """Record ``mode`` for the fleet (and this process, in case Redis is unreachable)."""
        self._local.remember(provider, server, mode)
        self._keep(provider, server, mode, self._clock())
        key = output_mode_key(self.prefix, provider)
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"mode": mode, "server": server, "at": f"{time.time():.3f}"})
                pipe.expire(key, _MODE_TTL_S)
                pipe.execute()
        except REDIS_ERRORS:
            log.warning("%s: could not share output mode %s (Redis unreachable)", provider, mode)
