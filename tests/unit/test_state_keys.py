"""Key layout: one prefix, one hash tag per provider, so each script touches one cluster slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from orchestration.state import ProviderKeys, provider_key


def test_key_names() -> None:
    keys = ProviderKeys.of("quorum:", "openai")
    assert keys.breaker == "quorum:{openai}:breaker"
    assert keys.health == "quorum:{openai}:health"
    assert keys.breaker_keys == [
        "quorum:{openai}:breaker",
        "quorum:{openai}:breaker:calls",
        "quorum:{openai}:breaker:failures",
    ]
    assert keys.health_keys == ["quorum:{openai}:health", "quorum:{openai}:health:latency"]


def test_each_providers_keys_share_one_slot() -> None:
    keys = ProviderKeys.of("quorum:", "claude")
    slots = {key_slot(k.encode()) for k in [*keys.breaker_keys, *keys.health_keys]}
    assert len(slots) == 1


@pytest.mark.parametrize("bad", ["", "a{b", "x}"])
def test_names_that_break_the_hash_tag_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        provider_key("quorum:", bad, "breaker")
