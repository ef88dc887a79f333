"""Run-time state of the emulator: per-provider counters, down switches, overrides and RNGs.

Everything here is touched from the single event-loop thread only, so it needs no locks.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from emulator.profile import EmulatorProfile, ProviderProfile, merge

#: How many free-text answers each provider keeps for ``GET /_admin/answers/{name}`` (oldest
#: dropped first): enough for a benchmark's rounds, bounded for a long-running emulator.
ANSWER_LOG = 5000


@dataclass
class ProviderState:
    """Counters, switches and the effective profile of one emulated provider."""

    name: str
    profile: ProviderProfile
    rng: random.Random
    overrides: dict[str, Any] = field(default_factory=dict)
    down: bool = False
    requests: int = 0
    in_flight: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: The free-text answers served, oldest first: what a benchmark grades candidates by
    #: (Quorum stores no result per provider call).
    answers: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=ANSWER_LOG))

    def stats(self) -> dict[str, Any]:
        """The JSON shape of ``GET /_admin/stats`` for this provider."""
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "in_flight": self.in_flight,
            "down": self.down,
        }


class EmulatorState:
    """All providers' state, created lazily the first time a provider name is seen."""

    def __init__(self, profile: EmulatorProfile) -> None:
        self.profile = profile
        self.providers: dict[str, ProviderState] = {}

    def _seed(self, name: str, profile: ProviderProfile) -> int | None:
        if profile.seed is not None:
            return profile.seed
        if self.profile.seed is None:
            return None
        # Stable across processes (unlike hash()), distinct per provider.
        return self.profile.seed * 1_000_003 + zlib.crc32(name.encode())

    def _build(self, name: str, overrides: dict[str, Any]) -> ProviderProfile:
        return ProviderProfile.model_validate(merge(self.profile.provider_settings(name), overrides))

    def get(self, name: str) -> ProviderState:
        """The state of ``name`` (created from the profile on first use)."""
        state = self.providers.get(name)
        if state is None:
            prof = self._build(name, {})
            state = ProviderState(name=name, profile=prof, rng=random.Random(self._seed(name, prof)))
            self.providers[name] = state
        return state

    def configure(self, name: str, overrides: dict[str, Any]) -> ProviderProfile:
        """Merge run-time ``overrides`` into ``name``'s profile (raises ValueError if invalid)."""
        state = self.get(name)
        combined = merge(state.overrides, overrides)
        state.profile = self._build(name, combined)
        state.overrides = combined
        if "seed" in overrides:
            state.rng.seed(self._seed(name, state.profile))
        return state.profile

    def reset(self) -> None:
        """Forget counters, overrides and down switches; reseed every RNG."""
        self.providers.clear()

    def stats(self) -> dict[str, dict[str, Any]]:
        """``{provider: {requests, errors, in_flight, down}}`` for every provider seen."""
        return {name: s.stats() for name, s in sorted(self.providers.items())}
