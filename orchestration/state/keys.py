"""Redis key names: everything under one prefix, each provider's keys sharing a hash tag.

``quorum:{openai}:breaker``, ``quorum:{openai}:health``, ... all hash to one slot, so every
script that touches one provider's keys is valid on Redis Cluster too.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "quorum:"


def provider_key(prefix: str, provider: str, suffix: str) -> str:
    """``{prefix}{{provider}}:{suffix}``; refuses names that would break the hash tag."""
    if not provider or "{" in provider or "}" in provider:
        raise ValueError(f"provider name {provider!r} cannot be used in a Redis hash tag")
    return f"{prefix}{{{provider}}}:{suffix}"


@dataclass(frozen=True)
class ProviderKeys:
    """The keys of one provider's breaker and health state (all in one cluster slot)."""

    breaker: str
    window_calls: str
    window_failures: str
    health: str
    latency: str

    @classmethod
    def of(cls, prefix: str, provider: str) -> ProviderKeys:
        """Build every key name of ``provider`` under ``prefix``."""
        return cls(
            breaker=provider_key(prefix, provider, "breaker"),
            window_calls=provider_key(prefix, provider, "breaker:calls"),
            window_failures=provider_key(prefix, provider, "breaker:failures"),
            health=provider_key(prefix, provider, "health"),
            latency=provider_key(prefix, provider, "health:latency"),
        )

    @property
    def breaker_keys(self) -> list[str]:
        """KEYS of the breaker script, in the order the Lua expects."""
        return [self.breaker, self.window_calls, self.window_failures]

    @property
    def health_keys(self) -> list[str]:
        """KEYS of the health script, in the order the Lua expects."""
        return [self.health, self.latency]
