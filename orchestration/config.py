"""Settings: one TOML file plus ``QUORUM_*`` environment variables (pydantic-settings).

The file is ``$QUORUM_CONFIG`` or ``./quorum.toml`` when present; without one the built-in
defaults below apply. Environment variables win over the file (``QUORUM_REDIS_URL``,
``QUORUM_ORCHESTRATION__DEADLINE_S``, ``QUORUM_PROVIDERS__OPENAI__MODEL``...). API keys are never
settings: adapters read them from the environment variable named by ``api_key_env``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from orchestration.errors import ConfigError
from orchestration.models import EXTRACT_STRATEGIES, Candidate, describe_errors

#: URL schemes redis-py (and so Celery's Redis transport and backend) accept.
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})

ProviderKind = Literal["anthropic", "openai", "gemini", "openai_compatible"]

DEFAULT_KEY_ENV: dict[str, str | None] = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "openai_compatible": None,
}
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


#: Default output-token cap per call: an extraction answer (value + confidence per field) takes
#: ~100-400 tokens, so 1024 leaves headroom for large schemas while a runaway generation stops
#: within seconds instead of running into the timeout; long generations raise it per job.
DEFAULT_MAX_TOKENS = 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderConfig(_Section):
    """One configured provider: which SDK, which model, where, and what it costs."""

    kind: ProviderKind
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str | None = None
    priority: int = 100
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    price_in_per_mtok: float = Field(default=0.0, ge=0)
    price_out_per_mtok: float = Field(default=0.0, ge=0)
    enabled: bool = True
    weight: float = Field(default=1.0, gt=0, le=10, description="Prior weight in consensus.")
    max_tokens: int | None = Field(
        default=DEFAULT_MAX_TOKENS,
        ge=1,
        le=32_768,
        description="Output-token cap of every call unless the job's params say otherwise "
        "(None: the server's own default).",
    )
    rpm: int | None = Field(default=None, ge=1, description="Requests per minute, fleet-wide.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens per minute, fleet-wide.")
    daily_budget_usd: float | None = Field(default=None, gt=0)
    structured_output: Literal["auto", "json_schema", "json_object", "tools", "prompt"] = Field(
        default="auto",
        description="openai/openai_compatible: how to ask for JSON; auto falls back and remembers.",
    )

    @model_validator(mode="after")
    def _structured_output_kind(self) -> ProviderConfig:
        if self.structured_output != "auto" and self.kind not in ("openai", "openai_compatible"):
            raise ValueError("structured_output applies to openai and openai_compatible providers only")
        return self

    def effective_base_url(self, name: str, emulator_url: str | None) -> str | None:
        """Where the SDK should send requests: the emulator's route for ``name`` when one is set.

        The emulator serves each provider under ``/{name}``; OpenAI-style SDKs expect ``/v1`` in
        the base URL, Anthropic's and Google's SDKs add their version themselves.
        """
        if not emulator_url:
            return self.base_url
        root = f"{emulator_url.rstrip('/')}/{name}"
        return f"{root}/v1" if self.kind in ("openai", "openai_compatible") else root

    def key_env(self) -> str | None:
        """Name of the environment variable holding this provider's API key."""
        return self.api_key_env or DEFAULT_KEY_ENV[self.kind]


class BreakerConfig(_Section):
    """Circuit-breaker thresholds shared by every provider."""

    window_s: float = Field(default=60.0, gt=0)
    min_calls: int = Field(default=5, ge=1, description="Calls in the window before rate counts.")
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    consecutive_failures: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)
    max_cooldown_s: float = Field(default=600.0, gt=0)
    backoff: float = Field(default=2.0, ge=1)
    auth_cooldown_s: float = Field(default=3600.0, gt=0)
    probe_lease_s: float = Field(default=60.0, gt=0, description="How long a half-open probe may run.")
    max_invalid_rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Quality threshold, off by default: a provider whose invalid-output rate over "
        "the last quality_window_s reaches it is skipped until the window forgets those answers.",
    )
    quality_window_s: float = Field(default=300.0, ge=60, le=3600)
    quality_min_answers: int = Field(
        default=10, ge=1, description="Answers in the window before it is judged."
    )


class OrchestrationConfig(_Section):
    """Defaults for jobs that do not say otherwise."""

    strategy: str = "failover"
    deadline_s: float = Field(default=60.0, gt=0, le=600)
    min_responses: int = Field(default=2, ge=1)
    min_agreement: int = Field(default=1, ge=1, description="Votes a field needs, else abstain.")
    similarity: float = Field(default=0.85, gt=0, le=1, description="Jaro-Winkler threshold.")
    cache_ttl_s: int = Field(default=3600, ge=0)
    early_quorum: bool = True
    candidates: list[str] | None = Field(
        default=None, description="Chord candidates when a job names none (default: all enabled)."
    )
    variations: dict[str, list[Candidate]] = Field(default_factory=dict)
    scorer_modules: list[str] = Field(
        default_factory=list,
        description="Modules whose @scorer callables generation jobs may name (imported at worker start).",
    )

    @field_validator("scorer_modules")
    @classmethod
    def _module_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _MODULE_NAME.match(name):
                raise ValueError(f"scorer_modules: {name!r} is not a dotted module name")
        return v

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in EXTRACT_STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; valid: {', '.join(EXTRACT_STRATEGIES)}")
        return v


def default_providers() -> dict[str, ProviderConfig]:
    """The providers of ``quorum.example.toml``, with list prices per million tokens."""
    return {
        "claude": ProviderConfig(
            kind="anthropic",
            model="claude-sonnet-4-6",
            priority=1,
            price_in_per_mtok=3.0,
            price_out_per_mtok=15.0,
        ),
        "openai": ProviderConfig(
            kind="openai",
            model="gpt-4.1-mini",
            priority=2,
            price_in_per_mtok=0.40,
            price_out_per_mtok=1.60,
        ),
        "gemini": ProviderConfig(
            kind="gemini",
            model="gemini-2.5-flash",
            priority=3,
            price_in_per_mtok=0.30,
            price_out_per_mtok=2.50,
        ),
        "local": ProviderConfig(
            kind="openai_compatible",
            model="llama3.1:8b",
            priority=4,
            base_url="http://127.0.0.1:11434/v1",
            enabled=False,
        ),
    }


class Settings(BaseSettings):
    """Everything a worker, the CLI or the emulator needs to know."""

    model_config = SettingsConfigDict(
        env_prefix="QUORUM_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    redis_url: str | None = Field(default=None, description="Broker, backend and state.")
    broker_url: str | None = None
    result_backend: str | None = None
    key_prefix: str = Field(default="quorum:", min_length=1)
    result_expires_s: int = Field(default=86_400, ge=60)
    visibility_timeout_s: int = Field(
        default=3600,
        ge=1,
        description="Fallback redelivery of un-acked tasks whose holder is not alive; above any deadline.",
    )
    liveness_window_s: float = Field(
        default=4.0,
        ge=1.0,
        le=300.0,
        description="A worker silent this long is dead: live workers hand back its tasks.",
    )
    worker_concurrency: int = Field(default=32, ge=1, le=1024, description="Threads per worker.")
    emulator_url: str | None = Field(
        default=None, description="Point every provider at this emulator instead."
    )
    fleet_secret: SecretStr | None = Field(
        default=None, description="Key of the MACs on worker-to-worker messages (QUORUM_FLEET_SECRET)."
    )
    fleet_secret_file: Path | None = Field(
        default=None, description="A file holding the fleet secret instead (QUORUM_FLEET_SECRET_FILE)."
    )
    providers: dict[str, ProviderConfig] = Field(default_factory=default_providers)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)

    @field_validator("redis_url", "broker_url", "result_backend")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v and v.partition("://")[0] not in REDIS_SCHEMES:
            scheme = v.partition("://")[0] if "://" in v else v[:20]
            raise ValueError(
                f"{scheme!r} is not a Redis URL scheme; use redis://HOST:6379/0 "
                "(rediss:// for TLS, unix:///path/redis.sock for a socket)"
            )
        return v

    @field_validator("providers")
    @classmethod
    def _names(cls, v: dict[str, ProviderConfig]) -> dict[str, ProviderConfig]:
        for name in v:
            if not name.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
                raise ValueError(f"provider name {name!r} must be alphanumeric (with - or _)")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        if environ is not None:  # load_settings(env=...): that environment, not this process's
            env_settings = _MappingEnvSource(settings_cls, environ)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_path(os.environ if environ is None else environ)
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def enabled_providers(self) -> list[str]:
        """Enabled provider names in priority order (ties by name)."""
        return [
            name
            for name, p in sorted(self.providers.items(), key=lambda kv: (kv[1].priority, kv[0]))
            if p.enabled
        ]

    def provider(self, name: str) -> ProviderConfig:
        """The named provider's config, or :class:`InvalidRequestError` naming the known ones."""
        from orchestration.errors import InvalidRequestError

        try:
            return self.providers[name]
        except KeyError:
            raise InvalidRequestError(
                f"unknown provider {name!r}; configured: {', '.join(sorted(self.providers))}",
                field="providers",
            ) from None

    def callable_provider(self, name: str) -> ProviderConfig:
        """The named provider's config if jobs may call it; a disabled (``enabled = false``) or
        unknown one is an :class:`InvalidRequestError` naming it: disabled means never called."""
        from orchestration.errors import InvalidRequestError

        config = self.provider(name)
        if not config.enabled:
            raise InvalidRequestError(
                f"provider {name!r} is disabled in the config (enabled = false); "
                f"enabled: {', '.join(self.enabled_providers()) or 'none'}",
                field="providers",
            )
        return config


#: The environment :func:`load_settings` reads instead of ``os.environ`` (None: ``os.environ``).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("quorum_settings_environ", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """The ``QUORUM_*`` variables of a given environment (pydantic-settings reads ``os.environ``)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = self._environ
        return parse_env_vars(environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def config_path(environ: Mapping[str, str] = os.environ) -> Path | None:
    """``$QUORUM_CONFIG`` if set (it must exist), else ``./quorum.toml`` if present."""
    explicit = environ.get("QUORUM_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"QUORUM_CONFIG: {path} does not exist", key="QUORUM_CONFIG")
        return path
    local = Path("quorum.toml")
    return local if local.is_file() else None


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Load settings, turning validation errors into a :class:`ConfigError` naming each key.

    ``env``: read the ``QUORUM_*`` variables (and ``QUORUM_CONFIG``) from it instead of this
    process's environment: the settings a process started with ``env`` will see.
    """
    token = _ENVIRON.set(env)
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(f"invalid configuration: {describe_errors(e)}") from None
    except ValueError as e:  # TOML syntax errors
        raise ConfigError(f"invalid configuration: {e}") from None
    finally:
        _ENVIRON.reset(token)
