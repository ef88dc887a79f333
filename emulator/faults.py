"""Drawing what happens to one request: its latency and whether (and how) it faults."""

from __future__ import annotations

import math
import random

from emulator.profile import ProviderProfile

#: Faults answered with an HTTP error status (the rest change or withhold the answer).
STATUS_FAULTS = frozenset({"rate_limit", "server", "unavailable", "overloaded", "bad_request", "auth"})
#: Share of the sampled latency an error response takes (errors come back faster than answers).
ERROR_LATENCY_SHARE = 0.25


def sample_latency(profile: ProviderProfile, rng: random.Random) -> float:
    """Seconds to wait before answering: log-normal around the median, capped."""
    if profile.latency_median_ms <= 0:
        return 0.0
    ms = profile.latency_median_ms
    if profile.latency_sigma > 0:
        ms = rng.lognormvariate(math.log(ms), profile.latency_sigma)
    return min(ms, profile.latency_max_ms) / 1000.0


def pick_fault(profile: ProviderProfile, rng: random.Random) -> str | None:
    """A fault kind with probability ``error_rate`` (weighted by ``errors``), else None."""
    if profile.error_rate <= 0 or rng.random() >= profile.error_rate:
        return None
    kinds = [k for k, w in profile.errors.items() if w > 0]
    if not kinds:
        return None
    return rng.choices(kinds, weights=[profile.errors[k] for k in kinds])[0]  # type: ignore[index]
