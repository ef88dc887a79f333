"""Shared constants and helpers of the provider contract suite."""

from __future__ import annotations

from typing import Any

from orchestration.config import ProviderConfig
from orchestration.providers import Provider, build_provider

#: A recognisable fake key: it must never show up in an error, its details or its repr.
FAKE_KEY = "sk-test-SECRET-1234567890abcdef"

#: One configured provider per adapter kind; ``local`` is an OpenAI-compatible server.
CONFIGS: dict[str, ProviderConfig] = {
    "claude": ProviderConfig(kind="anthropic", model="claude-sonnet-4-6", timeout_s=5.0),
    "openai": ProviderConfig(kind="openai", model="gpt-4.1-mini", timeout_s=5.0),
    "gemini": ProviderConfig(kind="gemini", model="gemini-2.5-flash", timeout_s=5.0),
    "local": ProviderConfig(
        kind="openai_compatible", model="llama3.1:8b", api_key_env="LOCAL_LLM_KEY", timeout_s=5.0
    ),
}

#: Fast, deterministic, fault-free unless a test configures otherwise.
PROFILE: dict[str, Any] = {
    "seed": 1234,
    "defaults": {"latency_median_ms": 2, "latency_sigma": 0, "error_rate": 0.0},
}


def key_env(name: str) -> str:
    """The environment variable holding ``name``'s key."""
    env = CONFIGS[name].key_env()
    assert env is not None
    return env


def make_provider(emulator: Any, name: str, key: str = FAKE_KEY) -> Provider:
    """``name``'s adapter pointed at the emulator, its key taken from a fake environment."""
    return build_provider(name, CONFIGS[name], emulator_url=emulator.url, env={key_env(name): key})
