"""Emulator profiles: per-provider latency, fault and noise settings, validated by pydantic.

A profile file (TOML, or JSON for generated test profiles) has optional top-level ``seed`` and
``dataset``, a ``[defaults]`` table and ``[providers.NAME]`` tables merged over the defaults.
A provider that is not named gets the defaults. Runtime overrides use the same merge.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from emulator.wire.flavours import Flavour

FaultKind = Literal[
    "rate_limit", "server", "unavailable", "overloaded", "hang", "reset",
    "malformed", "schema", "bad_request", "auth",
]  # fmt: skip
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]

#: Keys whose value replaces the base wholesale on merge instead of being merged key by key.
_REPLACED_ON_MERGE = frozenset({"errors"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoiseRates(_Strict):
    """Per-field probabilities that an extraction answer is noisy, by kind of noise."""

    wrong: float = Field(default=0.0, ge=0, le=1, description="A distractor or another record's value.")
    near_miss: float = Field(default=0.0, ge=0, le=1, description="One edit away from the label.")
    drop: float = Field(default=0.0, ge=0, le=1, description="null instead of the label.")
    swap: float = Field(default=0.0, ge=0, le=1, description="startup<->partner, person<->distractor.")

    @model_validator(mode="after")
    def _at_most_one(self) -> NoiseRates:
        if self.wrong + self.near_miss + self.drop + self.swap > 1:
            raise ValueError("noise rates add up to more than 1")
        return self


class DefectRates(_Strict):
    """Probabilities that a generated answer carries a defect, by kind of defect."""

    syntax: float = Field(default=0.0, ge=0, le=1)
    missing_requirement: float = Field(default=0.0, ge=0, le=1)
    refusal: float = Field(default=0.0, ge=0, le=1)
    empty: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _at_most_one(self) -> DefectRates:
        if self.syntax + self.missing_requirement + self.refusal + self.empty > 1:
            raise ValueError("defect rates add up to more than 1")
        return self


def _default_error_weights() -> dict[str, float]:
    return {"rate_limit": 1.0, "server": 1.0, "unavailable": 1.0, "overloaded": 1.0}


class ProviderProfile(_Strict):
    """How one emulated provider behaves: latency, faults, answer quality."""

    latency_median_ms: float = Field(default=30.0, ge=0)
    latency_sigma: float = Field(default=0.3, ge=0, le=3, description="Log-normal shape.")
    latency_max_ms: float = Field(default=30_000.0, gt=0, description="Cap on a sampled latency.")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="Share of requests that fault.")
    errors: dict[FaultKind, float] = Field(
        default_factory=_default_error_weights, description="Relative weight of each fault kind."
    )
    retry_after_s: float = Field(default=1.0, ge=0, description="retry-after sent with a 429.")
    hang_s: float = Field(default=600.0, gt=0, description="How long a hang lasts.")
    reject_key: str = Field(default="bad-key", description="An API key answered with 401.")
    noise: NoiseRates = Field(default_factory=NoiseRates)
    defects: DefectRates = Field(default_factory=DefectRates)
    judge_error_rate: float = Field(default=0.05, ge=0, le=1, description="Judge picks the worse one.")
    temperature_noise: float = Field(
        default=0.25, ge=0, le=5, description="Noise and defect rates scale by 1 + this * temperature."
    )
    seed: int | None = None
    flavour: Flavour = Field(
        default="openai", description="OpenAI-compatible server whose request shapes and errors to serve."
    )

    @model_validator(mode="after")
    def _weights(self) -> ProviderProfile:
        if any(w < 0 for w in self.errors.values()):
            raise ValueError("errors weights must be >= 0")
        if self.error_rate > 0 and not sum(self.errors.values()) > 0:
            raise ValueError("error_rate > 0 needs at least one positive weight in errors")
        return self


class EmulatorProfile(_Strict):
    """A whole profile file: defaults, named providers, seed and the labelled data set."""

    seed: int | None = None
    dataset: Path | None = Field(
        default=None, description="JSONL of labelled emails (default: orchestration.data)."
    )
    defaults: dict[str, Any] = Field(default_factory=dict)
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_tables(self) -> EmulatorProfile:
        ProviderProfile.model_validate(self.defaults)
        for name in self.providers:
            self.provider_settings(name)
        return self

    def provider_settings(self, name: str) -> dict[str, Any]:
        """The raw settings of ``name``: its table merged over the defaults (validated)."""
        merged = merge(self.defaults, self.providers.get(name, {}))
        try:
            ProviderProfile.model_validate(merged)
        except ValidationError as e:
            raise ValueError(f"providers.{name}: {e}") from None
        return merged


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``; ``errors`` tables are replaced whole."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in _REPLACED_ON_MERGE:
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def packaged_profile(name: str) -> Path:
    """Path of a profile shipped in ``emulator/profiles`` (``default``, ``chaos``)."""
    return Path(str(resources.files("emulator") / "profiles" / f"{name}.toml"))


def load_profile(source: Path | str | dict[str, Any] | None = None) -> EmulatorProfile:
    """Load and validate a profile from a file (TOML or .json), a dict, or the packaged default."""
    if isinstance(source, dict):
        return EmulatorProfile.model_validate(source)
    path = Path(source) if source is not None else packaged_profile("default")
    if not path.is_file() and source is not None and packaged_profile(str(source)).is_file():
        path = packaged_profile(str(source))
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    profile = EmulatorProfile.model_validate(data)
    if profile.dataset is not None and not profile.dataset.is_absolute():
        profile.dataset = path.parent / profile.dataset
    return profile
