"""A job's candidates, resolved the same way for both job kinds (extraction and generation):
from the request, a variation grid or the fleet's provider order; checked; labelled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from orchestration.config import Settings
from orchestration.errors import InvalidRequestError
from orchestration.models import Candidate, SamplingParams
from orchestration.state.fleet import FleetSetting

__all__ = [
    "CandidateSource",
    "candidate_providers",
    "check_candidates",
    "chord_candidates",
    "chord_labels",
    "provider_order",
]


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


def candidate_providers(request: CandidateSource, settings: Settings, *, failover: bool = False) -> list[str]:
    """Every enabled provider a job from ``request`` may call, whatever the fleet's setting and
    the strategy turn out to be (a superset of its candidates' providers), so that a worker can
    read their breakers in the same round trip as the fleet setting the candidates depend on.
    ``failover``: the request asks for failover; when it names its providers, only the first
    is read ahead (the first hop's; a later hop reads its own breaker when it gets there)."""
    enabled = settings.enabled_providers()
    if failover and request.providers:
        return [p for p in request.providers[:1] if p in enabled]
    names = list(request.providers or [])
    names += [c.provider for c in request.candidates or []]
    if request.variations:
        names += [c.provider for c in settings.orchestration.variations.get(request.variations, [])]
    if not request.providers:  # the fleet's order or the configured candidates
        names += list(settings.orchestration.candidates or [])
        names += enabled
    return [p for p in dict.fromkeys(names) if p in enabled]


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
