"""Settings: TOML via QUORUM_CONFIG, environment overrides, errors that name the key,
per-provider base URLs, and the shipped ``quorum.example.toml``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestration.config import ProviderConfig, load_settings
from orchestration.errors import ConfigError, InvalidRequestError

REPO = Path(__file__).resolve().parents[2]

TOML = """
redis_url = "redis://files:6379/0"
key_prefix = "qtest:"

[providers.alpha]
kind = "openai"
model = "gpt-x"
priority = 5

[providers.beta]
kind = "anthropic"
model = "claude-x"
priority = 1

[providers.gamma]
kind = "gemini"
model = "gemini-x"
priority = 5

[providers.off]
kind = "openai_compatible"
model = "llama"
base_url = "http://127.0.0.1:11434/v1"
priority = 0
enabled = false

[orchestration]
strategy = "consensus"
deadline_s = 20

[orchestration.variations]
temps = [
    {provider = "alpha", params = {temperature = 0.0}},
    {provider = "alpha", params = {temperature = 0.9}},
]
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No QUORUM_* variables and no ./quorum.toml leak in from the developer's shell."""
    for key in list(os.environ):
        if key.startswith("QUORUM_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _write(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "q.toml"
    path.write_text(text)
    monkeypatch.setenv("QUORUM_CONFIG", str(path))
    return path


def test_toml_file_via_quorum_config(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write(tmp_path, TOML, clean_env)
    s = load_settings()
    assert s.redis_url == "redis://files:6379/0"
    assert s.key_prefix == "qtest:"
    assert set(s.providers) == {"alpha", "beta", "gamma", "off"}
    assert s.orchestration.strategy == "consensus"
    assert [c.params.temperature for c in s.orchestration.variations["temps"]] == [0.0, 0.9]


def test_environment_overrides_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write(tmp_path, TOML, clean_env)
    clean_env.setenv("QUORUM_REDIS_URL", "redis://env:6379/1")
    clean_env.setenv("QUORUM_ORCHESTRATION__DEADLINE_S", "7.5")
    clean_env.setenv("QUORUM_PROVIDERS__ALPHA__MODEL", "gpt-env")
    s = load_settings()
    assert s.redis_url == "redis://env:6379/1"
    assert s.orchestration.deadline_s == 7.5
    assert s.orchestration.strategy == "consensus"  # the rest of the section still from the file
    assert s.providers["alpha"].model == "gpt-env"
    assert s.providers["alpha"].priority == 5


def test_settings_of_another_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """load_settings(env=...) reads that environment (and its QUORUM_CONFIG), this one untouched."""
    path = tmp_path / "other.toml"
    path.write_text(TOML)
    clean_env.setenv("QUORUM_KEY_PREFIX", "mine:")
    before = dict(os.environ)
    env = {
        "QUORUM_CONFIG": str(path),
        "QUORUM_REDIS_URL": "redis://other:6379/2",
        "QUORUM_PROVIDERS__ALPHA__MODEL": "gpt-other",
    }
    s = load_settings(env=env)
    assert (s.redis_url, s.key_prefix) == ("redis://other:6379/2", "qtest:")
    assert s.providers["alpha"].model == "gpt-other"
    assert dict(os.environ) == before
    assert load_settings().key_prefix == "mine:"  # and the next plain load reads os.environ again


def test_defaults_without_a_file(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.enabled_providers() == ["claude", "openai", "gemini"]
    assert s.providers["local"].enabled is False


def test_invalid_value_names_key_and_reason(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write(tmp_path, TOML.replace('model = "gpt-x"', 'model = "gpt-x"\ntimeout_s = -1'), clean_env)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "providers.alpha.timeout_s" in str(info.value)
    assert "greater than 0" in str(info.value)


def test_invalid_env_value_names_key(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("QUORUM_ORCHESTRATION__STRATEGY", "majority")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "orchestration.strategy" in str(info.value) and "majority" in str(info.value)


def test_scorer_modules_are_dotted_names_and_not_imported_by_loading(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("QUORUM_ORCHESTRATION__SCORER_MODULES", '["acme.scorers", "quorum_not_installed"]')
    assert load_settings().orchestration.scorer_modules == ["acme.scorers", "quorum_not_installed"]
    clean_env.setenv("QUORUM_ORCHESTRATION__SCORER_MODULES", '["acme.scorers:fn"]')
    with pytest.raises(ConfigError, match="scorer_modules"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (TOML.replace('model = "gpt-x"', 'modle = "gpt-y"\nmodel = "gpt-x"'), "providers.alpha.modle"),
        ("redis_ulr = 'redis://x'\n" + TOML, "redis_ulr"),
        (TOML + "\n[breaker]\nwindow = 3\n", "breaker.window"),
    ],
)
def test_unknown_key_rejected(clean_env: pytest.MonkeyPatch, tmp_path: Path, text: str, key: str) -> None:
    _write(tmp_path, text, clean_env)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert key in str(info.value)
    assert "Extra inputs are not permitted" in str(info.value)


def test_missing_config_file_is_an_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("QUORUM_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="QUORUM_CONFIG"):
        load_settings()


def test_toml_syntax_error_is_config_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write(tmp_path, "redis_url = \n", clean_env)
    with pytest.raises(ConfigError):
        load_settings()


def test_enabled_providers_order(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write(tmp_path, TOML, clean_env)
    s = load_settings()
    # priority first, ties by name; disabled ones left out
    assert s.enabled_providers() == ["beta", "alpha", "gamma"]


def test_unknown_provider_is_invalid_request(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidRequestError, match="unknown provider 'nope'"):
        load_settings().provider("nope")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("openai", "http://127.0.0.1:9/p/v1"),
        ("openai_compatible", "http://127.0.0.1:9/p/v1"),
        ("anthropic", "http://127.0.0.1:9/p"),
        ("gemini", "http://127.0.0.1:9/p"),
    ],
)
def test_effective_base_url(kind: str, expected: str) -> None:
    config = ProviderConfig(kind=kind, model="m", base_url="http://own/v1")
    assert config.effective_base_url("p", "http://127.0.0.1:9/") == expected
    assert config.effective_base_url("p", None) == "http://own/v1"
    assert ProviderConfig(kind=kind, model="m").effective_base_url("p", None) is None


def test_key_env_defaults_and_override() -> None:
    assert ProviderConfig(kind="anthropic", model="m").key_env() == "ANTHROPIC_API_KEY"
    assert ProviderConfig(kind="gemini", model="m").key_env() == "GEMINI_API_KEY"
    assert ProviderConfig(kind="openai_compatible", model="m").key_env() is None
    assert ProviderConfig(kind="openai", model="m", api_key_env="MY_KEY").key_env() == "MY_KEY"


def test_example_toml_loads(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("QUORUM_CONFIG", str(REPO / "quorum.example.toml"))
    s = load_settings()
    assert set(s.providers) == {"claude", "openai", "gemini", "local"}
    assert s.providers["claude"].kind == "anthropic"
    assert s.providers["local"].kind == "openai_compatible"
    assert s.providers["local"].base_url == "http://127.0.0.1:11434/v1"
    assert s.providers["local"].enabled is False
    assert s.enabled_providers() == ["claude", "openai", "gemini"]
    assert s.orchestration.variations["temps"][0].provider == "openai"
    assert s.breaker.failure_rate == 0.5


def test_env_example_names_every_key() -> None:
    text = (REPO / ".env.example").read_text()
    for name in ("ANTHROPIC_API_KEY=", "OPENAI_API_KEY=", "GEMINI_API_KEY=", "QUORUM_REDIS_URL=",
                 "QUORUM_CONFIG="):  # fmt: skip
        assert name in text
