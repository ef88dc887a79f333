"""Pydantic models of generation jobs (free text / code): the ``quorum.generate`` kwargs and the
result ``AsyncResult(job_id).get()`` returns. Every model round-trips through JSON."""

from __future__ import annotations

import math
import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestration.models import (
    MAX_DEADLINE_S,
    MAX_TEXT_CHARS,
    Candidate,
    SamplingParams,
    _check_text,
)

Selector = Literal["majority", "quality_weighted", "hybrid_merge", "tournament", "confidence_threshold"]
SELECTORS: tuple[str, ...] = get_args(Selector)

#: At most this many requirements per job, each at most this many characters.
MAX_REQUIREMENTS = 50
MAX_REQUIREMENT_CHARS = 500
#: Defaults of the confidence_threshold selector (best score / share of candidates agreeing).
DEFAULT_MIN_SCORE = 0.7
DEFAULT_MIN_AGREEMENT = 0.51  # "more than half" for up to 50 candidates

_LANGUAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+#.\-]{0,31}$")


def _check_unicode(text: str, what: str) -> str:
    """Reject lone surrogates from foreign producers (they break JSON and the SDKs)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not valid Unicode ({e.reason} at {e.start})") from None
    return text


class GenerationRequest(BaseModel):
    """A generation job as producers send it (the kwargs of ``quorum.generate``)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="The task, in natural language.")
    system: str | None = Field(default=None, description="Extra system instructions (blank = none).")
    requirements: list[str] = Field(
        default_factory=list, description="Checklist the answer must meet (scored by `completeness`)."
    )
    language: str | None = Field(
        default=None, description="Output language, e.g. python, json, text (drives `syntax`)."
    )
    providers: list[str] | None = Field(default=None, description="The providers to ask.")
    candidates: list[Candidate] | None = Field(
        default=None, description="Explicit candidates (provider + params)."
    )
    variations: str | None = Field(
        default=None, description="Name of a variation grid under [orchestration.variations]."
    )
    params: SamplingParams = Field(default_factory=SamplingParams)
    selector: Selector = "quality_weighted"
    scorers: dict[str, float] | None = Field(
        default=None,
        description="Scorer (built-in name, dotted path or entry point) → weight ≥ 0; None = defaults.",
    )
    quality_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, allow_inf_nan=False,
        description="Stop asking further candidates once one scores at least this (early stop).",
    )  # fmt: skip
    min_score: float = Field(
        default=DEFAULT_MIN_SCORE, ge=0.0, le=1.0, allow_inf_nan=False,
        description="confidence_threshold: the best answer's quality score must reach this.",
    )  # fmt: skip
    min_agreement: float = Field(
        default=DEFAULT_MIN_AGREEMENT, ge=0.0, le=1.0, allow_inf_nan=False,
        description="confidence_threshold: share of answering candidates similar to the best.",
    )  # fmt: skip
    escalate_to: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="confidence_threshold: a stronger provider to ask when confidence is low.",
    )  # fmt: skip
    judge: str | None = Field(
        default=None, min_length=1, max_length=64, description="tournament: the judging provider."
    )
    aggregator: str | None = Field(
        default=None, min_length=1, max_length=64, description="hybrid_merge: the merging provider."
    )
    top_k: int = Field(default=3, ge=1, le=32, description="hybrid_merge: how many answers to merge.")
    deadline_s: float | None = Field(default=None, gt=0.0, le=MAX_DEADLINE_S, allow_inf_nan=False)
    min_responses: int | None = Field(default=None, ge=1, le=32)
    use_cache: bool = True

    @field_validator("prompt")
    @classmethod
    def _prompt_ok(cls, v: str) -> str:
        return _check_text(v)

    @field_validator("system")
    @classmethod
    def _system_ok(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if len(v) > MAX_TEXT_CHARS:
            raise ValueError(f"system is {len(v)} characters; the limit is {MAX_TEXT_CHARS}")
        return _check_unicode(v, "system")

    @field_validator("requirements")
    @classmethod
    def _requirements_ok(cls, v: list[str]) -> list[str]:
        if len(v) > MAX_REQUIREMENTS:
            raise ValueError(f"{len(v)} requirements; the limit is {MAX_REQUIREMENTS}")
        out = []
        for i, req in enumerate(v):
            req = req.strip()
            if not req:
                raise ValueError(f"requirement {i} is empty")
            if len(req) > MAX_REQUIREMENT_CHARS:
                raise ValueError(
                    f"requirement {i} is {len(req)} characters; the limit is {MAX_REQUIREMENT_CHARS}"
                )
            out.append(_check_unicode(req, f"requirement {i}"))
        return out

    @field_validator("language")
    @classmethod
    def _language_ok(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().lower()
        if not _LANGUAGE_RE.match(v):
            raise ValueError(f"language {v!r} is not a language name (letters, digits, _+#.-)")
        return v

    @field_validator("providers")
    @classmethod
    def _providers_ok(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not 1 <= len(v) <= 32:
            raise ValueError("providers must hold 1 to 32 names")
        return v

    @field_validator("candidates")
    @classmethod
    def _candidates_ok(cls, v: list[Candidate] | None) -> list[Candidate] | None:
        if v is not None and not 1 <= len(v) <= 32:
            raise ValueError("candidates must hold 1 to 32 entries")
        return v

    @field_validator("scorers")
    @classmethod
    def _scorers_ok(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("scorers is empty (omit it for the defaults)")
        for name, weight in v.items():
            if not name.strip() or len(name) > 200:
                raise ValueError(f"scorer name {name!r} must be 1 to 200 characters")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"scorer {name!r}: weight {weight} must be a finite number ≥ 0")
        if sum(v.values()) <= 0:
            raise ValueError("scorers: at least one weight must be > 0")
        return v


class CandidateSummary(BaseModel):
    """One candidate of a generation job: who answered, how well it scored, what it cost."""

    label: str
    provider: str
    model: str = ""
    params: SamplingParams = Field(default_factory=SamplingParams)
    ok: bool = False
    skipped: bool = Field(default=False, description="Not sent (breaker open, early stop, ...).")
    score: float | None = Field(default=None, description="Weighted quality score, None if failed.")
    breakdown: dict[str, float] = Field(default_factory=dict, description="Score per scorer.")
    error: dict[str, Any] | None = Field(default=None, description="QuorumError.to_dict()")
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0


class JudgeFailure(BaseModel):
    """A tournament pair whose judge call failed or answered nonsense: decided by score."""

    a: str
    b: str
    winner: str
    error: dict[str, Any]


class TournamentRound(BaseModel):
    """One round of pairwise judging: the pairs, the bye, who advanced and what failed."""

    index: int = Field(ge=0)
    pairs: list[tuple[str, str]]
    bye: str | None = None
    winners: list[str] = Field(description="Labels advancing: each pair's winner, then the bye.")
    decided_by: list[Literal["judge", "score"]] = Field(
        default_factory=list, description="Per pair: the judge's verdict or the score fallback."
    )
    judge_errors: list[JudgeFailure] = Field(default_factory=list)


class GenerationResult(BaseModel):
    """The generation job's final answer as ``AsyncResult(job_id).get()`` returns it (as a dict)."""

    job_id: str
    kind: Literal["generate"] = "generate"
    selector: str
    text: str | None = None
    chosen: str | None = Field(default=None, description="Winning label ('aggregate' for a merge).")
    score: float | None = None
    breakdown: dict[str, float] = Field(default_factory=dict)
    agreement: float | None = Field(default=None, description="Share of answers similar to it.")
    no_consensus: bool = False
    escalated: bool = False
    reason: str | None = Field(default=None, description="Why no consensus / escalation.")
    merged_from: list[str] = Field(default_factory=list, description="hybrid_merge: top-K labels.")
    candidates: list[CandidateSummary] = Field(default_factory=list)
    rounds: list[TournamentRound] = Field(default_factory=list)
    calls: int = Field(default=0, description="Provider calls sent (candidates, judges, merge).")
    calls_saved: int = Field(default=0, description="Planned calls not sent thanks to early stop.")
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: bool = False
