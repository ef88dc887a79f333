"""The structured-output mode that works for each provider, shared by the fleet in Redis.

Per provider, a hash ``{prefix}{provider}:output_mode`` with ``mode``, ``server`` (a
fingerprint of base URL and model: a record about another server is ignored) and ``at``. It
expires after :data:`_MODE_TTL_S`, so an upgraded server is probed again. While Redis is
unreachable each process remembers on its own.
"""

from __future__ import annotations

import logging
import time
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


def output_mode_key(prefix: str, provider: str) -> str:
    """``quorum:{local}:output_mode``."""
    return provider_key(prefix, provider, "output_mode")


class RedisModeMemory:
    """A fleet-wide :class:`~orchestration.providers.output_modes.ModeMemory` in Redis."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix
        self._local = LocalModeMemory()

    def recall(self, provider: str, server: str) -> OutputMode | None:
        """The fleet's mode for ``provider`` at ``server``; this process's while Redis is down."""
        try:
            record = self.redis.hgetall(output_mode_key(self.prefix, provider))
        except REDIS_ERRORS:
            return self._local.recall(provider, server)
        fields = {text(k): text(v) for k, v in record.items()}  # type: ignore[union-attr]
        mode = fields.get("mode")
        if fields.get("server") != server or mode not in _MODES:
            return None
        return mode  # type: ignore[return-value]

    def remember(self, provider: str, server: str, mode: OutputMode) -> None:
        """Record ``mode`` for the fleet (and this process, in case Redis is unreachable)."""
        self._local.remember(provider, server, mode)
        key = output_mode_key(self.prefix, provider)
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"mode": mode, "server": server, "at": f"{time.time():.3f}"})
                pipe.expire(key, _MODE_TTL_S)
                pipe.execute()
        except REDIS_ERRORS:
            log.warning("%s: could not share output mode %s (Redis unreachable)", provider, mode)
