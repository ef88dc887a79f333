"""Build providers from configuration, and keep one per name per process.

API keys come only from the environment mapping handed in (normally ``os.environ``), from the
variable named by ``ProviderConfig.key_env()``; Gemini also accepts ``GOOGLE_API_KEY``.

A missing key raises :class:`AuthError` when the provider is *built* — which the registry does
lazily, on the first call that needs it — so the failure surfaces at call time, in the task
that wanted the provider, as a mapped provider error (``reason="missing_key"``, ``status``
None). It is not cached: a later call tries again. Exceptions: an ``openai_compatible`` server
needs no key (placeholder ``"not-needed"``), and with an emulator URL set a missing key becomes
the placeholder ``"emulated"``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from orchestration.config import ProviderConfig, Settings
from orchestration.errors import AuthError, InvalidRequestError
from orchestration.providers.base import Provider
from orchestration.providers.output_modes import LocalModeMemory, ModeMemory

EMULATED_KEY = "emulated"
LOCAL_KEY = "not-needed"

ProviderFactory = Callable[..., Provider]


def _factory(kind: str) -> ProviderFactory | None:
    """The adapter class for ``kind`` (imported lazily: each SDK is a heavy import)."""
    if kind == "anthropic":
        from orchestration.providers.anthropic import AnthropicProvider

        return AnthropicProvider
    if kind in ("openai", "openai_compatible"):
        from orchestration.providers.openai import OpenAIProvider

        return lambda *a, **kw: OpenAIProvider(*a, kind=kind, **kw)
    if kind == "gemini":
        from orchestration.providers.gemini import GeminiProvider

        return GeminiProvider
    return None


def preload(kinds: set[str]) -> None:
    """Import the adapters (and SDKs) of ``kinds`` now: a prefork pool's processes then inherit
    them instead of each importing ~1.8 s of SDK code on its first call."""
    for kind in kinds:
        _factory(kind)


def resolve_api_key(name: str, config: ProviderConfig, *, emulated: bool, env: Mapping[str, str]) -> str:
    """The API key for ``name`` from ``env``, a placeholder where none is needed, else AuthError."""
    key_env = config.key_env()
    key = env.get(key_env, "").strip() if key_env else ""
    if not key and config.kind == "gemini" and not config.api_key_env:
        key = env.get("GOOGLE_API_KEY", "").strip()
    if key:
        return key
    if emulated:
        return EMULATED_KEY
    if config.kind == "openai_compatible":
        return LOCAL_KEY
    wanted = key_env + (" or GOOGLE_API_KEY" if config.kind == "gemini" and not config.api_key_env else "")
    raise AuthError(
        f"{name}: no API key: set {wanted} in the worker's environment",
        provider=name, reason="missing_key", key_env=key_env,
    )  # fmt: skip


def build_provider(name: str, config: ProviderConfig, *, emulator_url: str | None,
                   env: Mapping[str, str], modes: ModeMemory | None = None) -> Provider:  # fmt: skip
    """A ready provider for ``name``: the adapter of ``config.kind`` with its key and base URL;
    OpenAI-style adapters also get their structured-output mode and where to remember it."""
    factory = _factory(config.kind)
    if factory is None:
        raise InvalidRequestError(
            f"provider {name!r} has unknown kind {config.kind!r}; "
            "valid: anthropic, openai, gemini, openai_compatible",
            provider=name, field="kind",
        )  # fmt: skip
    api_key = resolve_api_key(name, config, emulated=bool(emulator_url), env=env)
    extra: dict[str, Any] = {}
    if config.kind in ("openai", "openai_compatible"):
        extra = {"structured_output": config.structured_output, "modes": modes}
    provider = factory(
        name, config.model, api_key=api_key,
        base_url=config.effective_base_url(name, emulator_url), timeout_s=config.timeout_s, **extra,
    )  # fmt: skip
    provider.max_tokens = config.max_tokens
    return provider


class ProviderRegistry:
    """One built provider per configured name per process (lazy, thread-safe); SDK clients and
    their connection pools are reused across calls."""

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None,
                 modes: ModeMemory | None = None) -> None:  # fmt: skip
        self.settings = settings
        #: Where ``auto`` structured output remembers each provider's working mode.
        self.modes: ModeMemory = modes if modes is not None else LocalModeMemory()
        self._env: Mapping[str, str] = dict(os.environ if env is None else env)
        self._lock = threading.Lock()
        self._providers: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        """The provider called ``name``; InvalidRequestError if unknown, AuthError if keyless."""
        provider = self._providers.get(name)
        if provider is not None:
            return provider
        config = self.settings.provider(name)
        with self._lock:
            provider = self._providers.get(name)
            if provider is None:
                provider = build_provider(name, config, emulator_url=self.settings.emulator_url,
                                          env=self._env, modes=self.modes)  # fmt: skip
                self._providers[name] = provider
        return provider

    def __contains__(self, name: object) -> bool:
        return name in self.settings.providers

    def names(self) -> list[str]:
        """Enabled provider names in priority order."""
        return self.settings.enabled_providers()

    def close(self) -> None:
        """Close every built provider's SDK client (worker shutdown)."""
        with self._lock:
            providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            close = getattr(provider, "close", None)
            if callable(close):
                close()
