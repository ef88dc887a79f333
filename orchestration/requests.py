"""What both job kinds (extraction and generation) share: a producer's keyword arguments
validated, the job's candidates and their labels, and the per-attempt summary a failed job
reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from orchestration.config import Settings
from orchestration.errors import InvalidRequestError
from orchestration.models import Attempt, Candidate, SamplingParams, describe_errors
from orchestration.state.fleet import FleetSetting

__all__ = [
    "CandidateSource",
    "attempt_summaries",
    "check_candidates",
    "chord_candidates",
    "chord_labels",
    "parse_job_args",
    "provider_order",
]

_M = TypeVar("_M", bound=BaseModel)


def parse_job_args(model: type[_M], task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _M:
    """Validate a producer's arguments to ``task`` as ``model``; :class:`InvalidRequestError`
    names each problem (positional arguments included)."""
    if args:
        raise InvalidRequestError(f"{task} takes keyword arguments only (send kwargs={{...}})", field="args")
    try:
        return model.model_validate(kwargs)
    except ValidationError as e:
        kind = task.removeprefix("quorum.").replace("extract", "extraction").replace("generate", "generation")
        raise InvalidRequestError(f"invalid {kind} request: {describe_errors(e)}") from None


class CandidateSource(Protocol):
    """The request fields that name a job's candidates (extraction and generation alike)."""

    candidates: list[Candidate] | None
    variations: str | None
    providers: list[str] | None
    params: SamplingParams


def provider_order(settings: Settings, fleet: FleetSetting) -> list[str]:
    """The enabled providers in the fleet's order (a disabled provider is never called)."""
    enabled = settings.enabled_providers()
    return [p for p in (fleet.order or enabled) if p in enabled] or enabled


def chord_candidates(request: CandidateSource, settings: Settings, order: list[str]) -> list[Candidate]:
    """Candidates from the request (explicit, a variation grid, or providers), else the config."""
    if request.candidates:
        return list(request.candidates)
    if request.variations:
        grid = settings.orchestration.variations.get(request.variations)
        if grid is None:
            known = ", ".join(sorted(settings.orchestration.variations)) or "none configured"
            raise InvalidRequestError(
                f"unknown variations {request.variations!r}; known: {known}", field="variations"
            )
        return list(grid)
    names = request.providers or settings.orchestration.candidates or order
    return [Candidate(provider=name, params=request.params) for name in names]


def check_candidates(candidates: Sequence[Candidate], settings: Settings) -> None:
    """:class:`InvalidRequestError` unless there are candidates and each names a callable provider."""
    if not candidates:
        raise InvalidRequestError("no providers: none enabled in the config", field="providers")
    for candidate in candidates:
        settings.callable_provider(candidate.provider)  # unknown or disabled → InvalidRequestError


def chord_labels(candidates: Sequence[Candidate]) -> list[str]:
    """A unique label per candidate: ``openai``, ``openai[t=0.7]``, ``openai#2`` for repeats."""
    plain = [c.label() for c in candidates]
    return [
        label if plain.count(label) == 1 else c.label(i)
        for i, (c, label) in enumerate(zip(candidates, plain, strict=True))
    ]


def attempt_summaries(attempts: Sequence[Attempt]) -> list[dict[str, object]]:
    """The per-attempt facts an operator needs: provider, error class, latency, cost."""
    return [
        {
            "provider": a.provider,
            "label": a.label,
            "error": a.error_type,
            "message": (a.error or {}).get("message"),
            "latency_ms": round(a.latency_ms, 2),
            "cost_usd": a.cost_usd,
            "skipped": a.skipped,
        }
        for a in attempts
    ]
