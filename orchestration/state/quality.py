"""The optional quality threshold (``[breaker] max_invalid_rate``, off by default) as a gate.

Unusable answers never open the availability breaker (docs/operations.md). An operator who
would rather not ask a provider whose answers are mostly unusable sets ``max_invalid_rate``:
while the provider's invalid-output rate over the last ``quality_window_s`` (at least
``quality_min_answers`` answers) reaches it, the provider is skipped like an open breaker (a
``ProviderUnavailableError`` in the job's attempts). It comes back by itself once the window
no longer holds those answers. The counts are per-minute buckets written by the health script
(:func:`orchestration.state.health.quality_bucket`); reading them is one pipelined round trip,
and without Redis the gate lets calls through (the breaker and the answers still protect jobs).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestration.config import BreakerConfig
from orchestration.state.health import QUALITY_BUCKET_S, quality_bucket
from orchestration.state.ratelimit import NO_TICKET, OutageLog
from orchestration.state.scripts import text

if TYPE_CHECKING:
    from orchestration.attempts import Ticket

log = logging.getLogger("quorum.quality")

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)


def _window_counts(redis: Redis, prefix: str, provider: str, now: float, window_s: float) -> tuple[int, int]:
    """``(answers, invalid)`` of ``provider`` in the buckets covering the last ``window_s``."""
    buckets = max(1, math.ceil(window_s / QUALITY_BUCKET_S))
    pipe = redis.pipeline(transaction=False)
    for i in range(buckets):
        pipe.hmget(quality_bucket(prefix, provider, now - i * QUALITY_BUCKET_S), ["answers", "invalid"])
    answers = invalid = 0
    for row in pipe.execute():
        answers += int(text(row[0]) or 0)
        invalid += int(text(row[1]) or 0)
    return answers, invalid


class QualityGate:
    """Skips a provider whose recent answers are too often unusable (when configured)."""

    def __init__(self, redis: Redis, prefix: str, config: BreakerConfig) -> None:
        self.redis, self.prefix, self.config = redis, prefix, config
        self._outage = OutageLog(log, "quality threshold")

    def refusal(self, provider: str, now: float) -> str | None:
        """Why ``provider`` is out of rotation for its answers' quality (None: it is not)."""
        limit = self.config.max_invalid_rate
        if limit is None:
            return None
        try:
            answers, invalid = _window_counts(
                self.redis, self.prefix, provider, now, self.config.quality_window_s
            )
        except REDIS_ERRORS as e:
            self._outage.failed(e)
            return None
        self._outage.ok()
        if answers < self.config.quality_min_answers or invalid / answers < limit:
            return None
        return (
            f"quality threshold: {invalid} of its last {answers} answers unusable "
            f"({invalid / answers:.0%} >= {limit:.0%})"
        )

    def admit(self, provider: str, now: float) -> Ticket | str:
        """A no-op ticket, or why the provider is skipped."""
        return self.refusal(provider, now) or NO_TICKET
