"""Turning ``quorum.generate`` kwargs into a validated, fully resolved job, the provider calls such
a job makes (candidates, judges, the aggregator, the escalation) and the result it publishes.

A :class:`GenerationSpec` is stored once per job in Redis and read by every hop of a generation
job, like :class:`orchestration.extraction.ExtractionSpec` is for extraction: it carries the
absolute deadline, the resolved candidates and scorers, so no hop re-reads the config to decide
what the job means.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from orchestration.attempts import Invoke
from orchestration.candidates import (
    check_candidates,
    chord_candidates,
    chord_labels,
    provider_order,
)
from orchestration.config import Settings
from orchestration.errors import InvalidRequestError
from orchestration.generation.models import (
    CandidateSummary,
    GenerationRequest,
    GenerationResult,
    TournamentRound,
)
from orchestration.generation.scoring import ScoreCard, ScoringContext, resolve_scorers
from orchestration.generation.selectors import DEFAULT_SIMILARITY
from orchestration.models import Attempt, Candidate, parse_job_args
from orchestration.prompts import (
    AGGREGATE_SYSTEM,
    GENERATION_SYSTEM,
    JUDGE_SYSTEM,
    aggregate_prompt,
    generation_prompt,
    judge_prompt,
)
from orchestration.state import cache
from orchestration.state.fleet import FleetSetting

Role = Literal["candidate", "judge", "aggregate", "escalate"]
#: Label of a hybrid-merge answer (``GenerationResult.chosen``) and prefix of an escalation's.
AGGREGATE_LABEL = "aggregate"
_ESCALATE_PREFIX = "escalate:"


class GenerationSpec(BaseModel):
    """A validated generation job with everything resolved (selector, candidates, scorers, deadline)."""

    job_id: str
    kind: str = "generate"
    prompt: str
    system: str | None = None
    requirements: list[str] = Field(default_factory=list)
    language: str | None = None
    selector: str
    candidates: list[Candidate]
    scorers: dict[str, float] = Field(description="Resolved scorer names → weights (all > 0).")
    quality_threshold: float | None = None
    min_score: float
    min_agreement: float
    escalate_to: str | None = None
    judge: str = Field(description="Tournament judge provider (resolved even when unused).")
    aggregator: str = Field(description="Hybrid-merge aggregator provider (resolved even when unused).")
    top_k: int = 3
    similarity: float = DEFAULT_SIMILARITY
    started_at: float
    deadline: float = Field(description="Absolute (epoch seconds) time the job must end by.")
    min_responses: int = 1
    use_cache: bool = True

    def remaining(self, now: float | None = None) -> float:
        """Seconds left before the deadline (negative once passed)."""
        return self.deadline - (time.time() if now is None else now)

    def labels(self) -> list[str]:
        """A unique label per candidate, in the job's order (same rule as extraction chords)."""
        return chord_labels(self.candidates)

    def task(self) -> str:
        """The user message of every candidate call (and the task shown to judges/aggregator)."""
        return generation_prompt(self.prompt, self.requirements, self.language)

    def system_prompt(self) -> str:
        """The generation system prompt plus the producer's extra instructions, if any."""
        return f"{GENERATION_SYSTEM}\n\n{self.system}" if self.system else GENERATION_SYSTEM

    def context(self) -> ScoringContext:
        """What the scorers see besides each answer."""
        return ScoringContext(task=self.prompt, requirements=tuple(self.requirements), language=self.language)

    def cache_key(self, prefix: str, settings: Settings) -> str:
        """Where this job's answer is cached: derived from its validated content, never sent."""
        material = self.model_dump(
            mode="json", exclude={"job_id", "prompt", "started_at", "deadline", "use_cache", "candidates"}
        )
        providers = [c.provider for c in self.candidates] + [self.judge, self.aggregator]
        providers += [self.escalate_to] if self.escalate_to else []
        return cache.cache_key(
            prefix,
            self.kind,
            self.prompt,
            material,
            self.selector,
            [c.model_dump(mode="json") for c in self.candidates],
            cache.answer_sources(settings, providers),
        )


def parse_generation_request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> GenerationRequest:
    """Validate the arguments of ``quorum.generate``."""
    return parse_job_args(GenerationRequest, "quorum.generate", args, kwargs)


def _known(settings: Settings, name: str | None, what: str) -> str | None:
    """``name`` if it is a configured, enabled provider (None passes), else InvalidRequestError."""
    if name is not None:
        try:
            settings.callable_provider(name)
        except InvalidRequestError as e:
            raise InvalidRequestError(f"{what}: {e.message}", field=what) from None
    return name


def prepare_generate(
    request: GenerationRequest,
    *,
    job_id: str,
    settings: Settings,
    fleet: FleetSetting,
    now: float | None = None,
) -> GenerationSpec:
    """Resolve candidates, scorers, helper providers and deadline; bad input fails before any call."""
    now = time.time() if now is None else now
    scorers = {s.name: s.weight for s in resolve_scorers(request.scorers)}  # unknown → error now
    candidates = chord_candidates(request, settings, provider_order(settings, fleet))
    check_candidates(candidates, settings)
    first = candidates[0].provider
    orch = settings.orchestration
    # Early stop exists to send as few calls as possible: one good answer is enough by default.
    default_min = 1 if request.quality_threshold is not None else orch.min_responses
    min_responses = request.min_responses or min(default_min, len(candidates))
    if min_responses > len(candidates):
        raise InvalidRequestError(
            f"min_responses={min_responses} exceeds the {len(candidates)} candidates",
            field="min_responses",
        )
    return GenerationSpec(
        job_id=job_id,
        prompt=request.prompt,
        system=request.system,
        requirements=request.requirements,
        language=request.language,
        selector=request.selector,
        candidates=candidates,
        scorers=scorers,
        quality_threshold=request.quality_threshold,
        min_score=request.min_score,
        min_agreement=request.min_agreement,
        escalate_to=_known(settings, request.escalate_to, "escalate_to"),
        judge=_known(settings, request.judge, "judge") or first,
        aggregator=_known(settings, request.aggregator, "aggregator") or first,
        top_k=request.top_k,
        started_at=now,
        deadline=now + (request.deadline_s or orch.deadline_s),
        min_responses=min_responses,
        use_cache=request.use_cache,
    )


# --------------------------------------------------------------------------- provider calls


class ProviderCall(BaseModel):
    """One free-text provider call of a job, fully built (travels as the ``quorum.gen_call`` args)."""

    role: Role
    label: str
    candidate: Candidate
    system: str
    prompt: str


def generation_invoke(call: ProviderCall) -> Invoke:
    """The invoke of a free-text attempt (``run_attempt`` cuts its timeout to the deadline)."""
    return lambda provider, timeout: provider.generate(
        call.prompt, call.candidate.params, system=call.system, timeout=timeout
    )


def candidate_call(spec: GenerationSpec, index: int) -> ProviderCall:
    """Candidate ``index`` answering the task."""
    return ProviderCall(
        role="candidate",
        label=spec.labels()[index],
        candidate=spec.candidates[index],
        system=spec.system_prompt(),
        prompt=spec.task(),
    )


def judge_label(round_index: int, a: str, b: str) -> str:
    """Label of the judge call deciding ``a`` vs ``b`` in round ``round_index``."""
    return f"judge:r{round_index}:{a}|{b}"


def judge_call(spec: GenerationSpec, round_index: int, a: str, b: str, texts: dict[str, str]) -> ProviderCall:
    """The judge comparing ``a`` (candidate A) with ``b`` (candidate B)."""
    return ProviderCall(
        role="judge",
        label=judge_label(round_index, a, b),
        candidate=Candidate(provider=spec.judge),
        system=JUDGE_SYSTEM,
        prompt=judge_prompt(spec.task(), texts[a], texts[b]),
    )


def aggregate_call(spec: GenerationSpec, answers: list[str]) -> ProviderCall:
    """The one hybrid-merge call synthesising the top-K answers."""
    return ProviderCall(
        role="aggregate",
        label=f"{AGGREGATE_LABEL}:{spec.aggregator}",
        candidate=Candidate(provider=spec.aggregator),
        system=AGGREGATE_SYSTEM,
        prompt=aggregate_prompt(spec.task(), answers),
    )


def escalate_call(spec: GenerationSpec) -> ProviderCall:
    """The one call to the stronger provider when confidence is too low."""
    assert spec.escalate_to is not None
    return ProviderCall(
        role="escalate",
        label=f"{_ESCALATE_PREFIX}{spec.escalate_to}",
        candidate=Candidate(provider=spec.escalate_to),
        system=spec.system_prompt(),
        prompt=spec.task(),
    )


# --------------------------------------------------------------------------- progress & result


class Progress(BaseModel):
    """What a job has gathered so far; passed from hop to hop (chord bodies, rounds, chains)."""

    attempts: list[Attempt] = Field(default_factory=list, description="Candidate calls (and skips).")
    extra: list[Attempt] = Field(default_factory=list, description="Judge, aggregator, escalation.")
    rounds: list[TournamentRound] = Field(default_factory=list)
    pairs: list[tuple[str, str]] = Field(default_factory=list, description="The round being judged.")
    bye: str | None = None
    calls_saved: int = 0


@dataclass
class Pick:
    """The job's chosen answer and how it was reached (turned into a GenerationResult)."""

    chosen: str | None
    text: str | None
    card: ScoreCard | None
    agreement: float | None
    no_consensus: bool = False
    escalated: bool = False
    reason: str | None = None
    merged_from: list[str] = field(default_factory=list)


def _summary(attempt: Attempt, card: ScoreCard | None) -> CandidateSummary:
    return CandidateSummary(
        label=attempt.label,
        provider=attempt.provider,
        model=attempt.model,
        params=attempt.params,
        ok=attempt.ok,
        skipped=attempt.skipped,
        score=card.total if card else None,
        breakdown=dict(card.breakdown) if card else {},
        error=attempt.error,
        tokens_in=attempt.tokens_in,
        tokens_out=attempt.tokens_out,
        cost_usd=attempt.cost_usd,
        latency_ms=round(attempt.latency_ms, 2),
    )


def summaries(
    spec: GenerationSpec, progress: Progress, cards: dict[str, ScoreCard]
) -> list[CandidateSummary]:
    """Every candidate in the job's order (unsent ones as skipped), then any escalation."""
    by_label = {a.label: a for a in progress.attempts}
    out = []
    for label, cand in zip(spec.labels(), spec.candidates, strict=True):
        attempt = by_label.get(label) or Attempt(
            provider=cand.provider, label=label, params=cand.params, skipped=True
        )
        out.append(_summary(attempt, cards.get(label)))
    escalations = [a for a in progress.extra if a.label.startswith(_ESCALATE_PREFIX)]
    return out + [_summary(a, cards.get(a.label)) for a in escalations]


def build_result(
    spec: GenerationSpec,
    progress: Progress,
    pick: Pick,
    cards: dict[str, ScoreCard],
    now: float | None = None,
) -> GenerationResult:
    """The job's final result with totals over every call it made (candidates, judges, merge)."""
    now = time.time() if now is None else now
    calls = progress.attempts + progress.extra
    return GenerationResult(
        job_id=spec.job_id,
        selector=spec.selector,
        text=pick.text,
        chosen=pick.chosen,
        score=pick.card.total if pick.card else None,
        breakdown=dict(pick.card.breakdown) if pick.card else {},
        agreement=None if pick.agreement is None else round(pick.agreement, 4),
        no_consensus=pick.no_consensus,
        escalated=pick.escalated,
        reason=pick.reason,
        merged_from=pick.merged_from,
        candidates=summaries(spec, progress, cards),
        rounds=progress.rounds,
        calls=sum(1 for a in calls if not a.skipped),
        calls_saved=progress.calls_saved,
        tokens_in=sum(a.tokens_in for a in calls),
        tokens_out=sum(a.tokens_out for a in calls),
        cost_usd=round(sum(a.cost_usd for a in calls), 6),
        latency_ms=round((now - spec.started_at) * 1000, 2),
    )


def cached_result(hit: dict[str, Any], spec: GenerationSpec) -> dict[str, Any]:
    """A cached answer re-issued for this job: no calls, no cost, ``cached: true``."""
    result = GenerationResult.model_validate(hit).model_copy(
        update={
            "job_id": spec.job_id,
            "candidates": [],
            "rounds": [],
            "calls": 0,
            "calls_saved": 0,
            "tokens_in": 0,
            "tokens_out": 0,
            "cost_usd": 0.0,
            "cached": True,
            "latency_ms": round((time.time() - spec.started_at) * 1000, 2),
        }
    )
    return result.model_dump(mode="json")
