"""Turning a producer's kwargs into a validated, fully resolved job, and assembling results.

An :class:`ExtractionSpec` is stored once per job in Redis (under a key derived from the job id) and read
by every task of the job; messages carry the job id and small state only. It holds the absolute
deadline, the resolved schema and the provider order, so no hop re-reads the config to decide
what the job means.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from orchestration.candidates import check_candidates, chord_candidates, provider_order
from orchestration.config import Settings
from orchestration.errors import InvalidRequestError
from orchestration.models import (
    EXTRACT_STRATEGIES,
    Attempt,
    Candidate,
    ExtractionRequest,
    ExtractionResult,
    MergedField,
    parse_job_args,
)
from orchestration.schemas import resolve_schema
from orchestration.state import cache
from orchestration.state.fleet import FleetSetting


class ExtractionSpec(BaseModel):
    """A validated extraction job with everything resolved (strategy, candidates, deadline)."""

    job_id: str
    kind: str = "extract"
    text: str
    schema_name: str
    json_schema: dict[str, Any]
    strategy: str
    candidates: list[Candidate]
    started_at: float
    deadline: float = Field(description="Absolute (epoch seconds) time the job must end by.")
    min_responses: int = 2
    min_agreement: int = 1
    similarity: float = 0.85
    early_quorum: bool = True
    use_cache: bool = True

    def remaining(self, now: float | None = None) -> float:
        """Seconds left before the deadline (negative once passed)."""
        return self.deadline - (time.time() if now is None else now)

    @property
    def fields(self) -> list[str]:
        return list(self.json_schema["properties"])

    def cache_key(self, prefix: str, settings: Settings) -> str:
        """Where this job's answer is cached: derived from its validated content, never sent."""
        providers = [c.provider for c in self.candidates]
        return cache.cache_key(
            prefix,
            self.kind,
            self.text,
            self.json_schema,
            self.strategy,
            [c.model_dump(mode="json") for c in self.candidates],
            cache.answer_sources(settings, providers),
        )


def parse_request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ExtractionRequest:
    """Validate the arguments of ``quorum.extract``."""
    return parse_job_args(ExtractionRequest, "quorum.extract", args, kwargs)


def prepare_extract(
    request: ExtractionRequest,
    *,
    job_id: str,
    settings: Settings,
    fleet: FleetSetting,
    now: float | None = None,
) -> ExtractionSpec:
    """Resolve strategy, schema, candidates and deadline for one job."""
    now = time.time() if now is None else now
    strategy = request.strategy or fleet.strategy or settings.orchestration.strategy
    if strategy not in EXTRACT_STRATEGIES:
        raise InvalidRequestError(
            f"unknown strategy {strategy!r}; valid: {', '.join(EXTRACT_STRATEGIES)}", field="strategy"
        )
    schema_name, schema = resolve_schema(request.schema_name, request.json_schema)
    order = provider_order(settings, fleet)
    if strategy == "failover":
        names = request.providers or order
        candidates = [Candidate(provider=n, params=request.params) for n in names]
    else:
        candidates = chord_candidates(request, settings, order)
    check_candidates(candidates, settings)
    orch = settings.orchestration
    min_responses = request.min_responses or min(orch.min_responses, len(candidates))
    if strategy != "failover" and min_responses > len(candidates):
        raise InvalidRequestError(
            f"min_responses={min_responses} exceeds the {len(candidates)} candidates",
            field="min_responses",
        )
    return ExtractionSpec(
        job_id=job_id,
        text=request.text,
        schema_name=schema_name,
        json_schema=schema,
        strategy=strategy,
        candidates=candidates,
        started_at=now,
        deadline=now + (request.deadline_s or orch.deadline_s),
        min_responses=min_responses,
        min_agreement=request.min_agreement or orch.min_agreement,
        similarity=orch.similarity,
        early_quorum=request.early_quorum and orch.early_quorum,
        use_cache=request.use_cache,
    )


def single_answer(attempt: Attempt) -> dict[str, MergedField]:
    """Fields of one provider's answer as the job's answer (failover: one source, no vote)."""
    assert attempt.result is not None
    return {
        name: MergedField(
            value=fv.value,
            confidence=fv.confidence,
            agreement=1.0,
            votes=1,
            sources=[attempt.label or attempt.provider],
        )
        for name, fv in attempt.result.fields.items()
    }


def build_result(
    spec: ExtractionSpec,
    attempts: list[Attempt],
    fields: dict[str, MergedField],
    *,
    chosen: str | None,
    now: float | None = None,
    early: bool = False,
) -> ExtractionResult:
    """The job's final result with totals over every attempt so far; every schema field is in
    it (one a partial answer did not give abstains)."""
    now = time.time() if now is None else now
    return ExtractionResult(
        job_id=spec.job_id,
        strategy=spec.strategy,
        fields={name: fields.get(name) or MergedField(abstained=True) for name in spec.fields},
        chosen=chosen,
        attempts=attempts,
        tokens_in=sum(a.tokens_in for a in attempts),
        tokens_out=sum(a.tokens_out for a in attempts),
        cost_usd=round(sum(a.cost_usd for a in attempts), 6),
        latency_ms=round((now - spec.started_at) * 1000, 2),
        early=early,
    )


def cached_result(hit: dict[str, Any], spec: ExtractionSpec) -> dict[str, Any]:
    """A cached answer re-issued for this job: no calls, no cost, ``cached: true``."""
    result = ExtractionResult.model_validate(hit).model_copy(
        update={
            "job_id": spec.job_id,
            "attempts": [],
            "tokens_in": 0,
            "tokens_out": 0,
            "cost_usd": 0.0,
            "cached": True,
            "early": False,
            "latency_ms": round((time.time() - spec.started_at) * 1000, 2),
        }
    )
    return result.model_dump(mode="json")
