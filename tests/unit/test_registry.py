"""Building providers from configuration: kinds, keys, placeholders, base URLs, caching."""

from __future__ import annotations

import threading

import pytest

from orchestration.config import ProviderConfig, Settings
from orchestration.errors import AuthError, InvalidRequestError
from orchestration.providers import ProviderRegistry, build_provider
from orchestration.providers.anthropic import AnthropicProvider
from orchestration.providers.gemini import GeminiProvider
from orchestration.providers.openai import OpenAIProvider
from orchestration.providers.registry import EMULATED_KEY, LOCAL_KEY, resolve_api_key

EMU = "http://127.0.0.1:9999"


def cfg(kind: str, **kw: object) -> ProviderConfig:
    return ProviderConfig(kind=kind, model="m", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "cls", "env"),
    [
        ("anthropic", AnthropicProvider, "ANTHROPIC_API_KEY"),
        ("openai", OpenAIProvider, "OPENAI_API_KEY"),
        ("gemini", GeminiProvider, "GEMINI_API_KEY"),
        ("openai_compatible", OpenAIProvider, "X"),
    ],
)
def test_build_each_kind(kind: str, cls: type, env: str) -> None:
    p = build_provider("p", cfg(kind), emulator_url=None, env={env: "k-123"})
    assert isinstance(p, cls)
    assert p.name == "p" and p.model == "m"
    if isinstance(p, OpenAIProvider):
        assert p.kind == kind


def test_missing_key_is_auth_error_naming_the_variable() -> None:
    with pytest.raises(AuthError) as info:
        build_provider("claude", cfg("anthropic"), emulator_url=None, env={})
    e = info.value
    assert "ANTHROPIC_API_KEY" in str(e)
    assert e.provider == "claude" and e.reason == "missing_key" and e.status is None


def test_blank_key_counts_as_missing() -> None:
    with pytest.raises(AuthError):
        resolve_api_key("o", cfg("openai"), emulated=False, env={"OPENAI_API_KEY": "  "})


def test_gemini_accepts_google_api_key() -> None:
    assert resolve_api_key("g", cfg("gemini"), emulated=False, env={"GOOGLE_API_KEY": "g1"}) == "g1"
    env = {"GEMINI_API_KEY": "g2", "GOOGLE_API_KEY": "g1"}
    assert resolve_api_key("g", cfg("gemini"), emulated=False, env=env) == "g2"
    # an explicit api_key_env is the only place looked at
    with pytest.raises(AuthError):
        resolve_api_key("g", cfg("gemini", api_key_env="MY_G"), emulated=False, env={"GOOGLE_API_KEY": "g1"})


def test_custom_key_env() -> None:
    key = resolve_api_key("o", cfg("openai", api_key_env="TEAM_KEY"), emulated=False, env={"TEAM_KEY": "t"})
    assert key == "t"


def test_placeholders() -> None:
    assert resolve_api_key("l", cfg("openai_compatible"), emulated=False, env={}) == LOCAL_KEY
    assert resolve_api_key("c", cfg("anthropic"), emulated=True, env={}) == EMULATED_KEY
    env = {"ANTHROPIC_API_KEY": "real"}
    assert resolve_api_key("c", cfg("anthropic"), emulated=True, env=env) == "real"


def test_emulator_base_urls() -> None:
    assert build_provider("claude", cfg("anthropic"), emulator_url=EMU, env={}).base_url == f"{EMU}/claude"
    assert build_provider("oa", cfg("openai"), emulator_url=EMU, env={}).base_url == f"{EMU}/oa/v1"
    assert build_provider("gm", cfg("gemini"), emulator_url=EMU, env={}).base_url == f"{EMU}/gm"
    local = cfg("openai_compatible", base_url="http://127.0.0.1:11434/v1")
    assert build_provider("l", local, emulator_url=None, env={}).base_url == "http://127.0.0.1:11434/v1"


def test_unknown_kind_is_invalid_request() -> None:
    bogus = ProviderConfig.model_construct(kind="cohere", model="m", base_url=None, api_key_env=None)
    with pytest.raises(InvalidRequestError, match="unknown kind 'cohere'"):
        build_provider("x", bogus, emulator_url=None, env={})


def _settings(**kw: object) -> Settings:
    return Settings(
        providers={
            "claude": cfg("anthropic", priority=2),
            "openai": cfg("openai", priority=1),
            "local": cfg("openai_compatible", enabled=False),
        },
        **kw,  # type: ignore[arg-type]
    )


def test_registry_caches_one_provider_per_name() -> None:
    reg = ProviderRegistry(_settings(), env={"ANTHROPIC_API_KEY": "a", "OPENAI_API_KEY": "o"})
    assert reg.get("claude") is reg.get("claude")
    assert reg.get("openai") is not reg.get("claude")
    assert reg.names() == ["openai", "claude"]
    assert "local" in reg and "nope" not in reg
    reg.close()


def test_registry_is_thread_safe() -> None:
    reg = ProviderRegistry(_settings(), env={"OPENAI_API_KEY": "o"})
    seen: list[object] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        seen.append(reg.get("openai"))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and all(p is seen[0] for p in seen)


def test_registry_unknown_name_and_missing_key() -> None:
    reg = ProviderRegistry(_settings(), env={})
    with pytest.raises(InvalidRequestError, match="unknown provider"):
        reg.get("nope")
    with pytest.raises(AuthError):
        reg.get("claude")
    with pytest.raises(AuthError):  # not cached: asked again, fails again
        reg.get("claude")


def test_registry_uses_settings_emulator_url() -> None:
    reg = ProviderRegistry(_settings(emulator_url=EMU), env={})
    assert reg.get("claude").base_url == f"{EMU}/claude"
