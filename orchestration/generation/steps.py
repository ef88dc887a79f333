"""The steps of a generation job between provider calls, as pure functions the Celery layer runs in
its chord bodies and chain links: each takes what arrived, updates the job's :class:`Progress`
and says what comes next — the final result, a round of judge calls, one more call (aggregator,
escalation) or the next candidate (early stop). Deterministic, so a redelivered hop decides
the same way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from orchestration.errors import InsufficientResponsesError, OrchestrationTimeoutError
from orchestration.generation.jobs import (
    AGGREGATE_LABEL,
    GenerationSpec,
    Pick,
    Progress,
    ProviderCall,
    aggregate_call,
    build_result,
    escalate_call,
    judge_call,
    judge_label,
)
from orchestration.generation.models import GenerationResult
from orchestration.generation.scoring import ScoreCard, normalise, resolve_scorers, score_all, similarity
from orchestration.generation.selectors import (
    MajorityResult,
    apply_judgements,
    calls_saved,
    decide_confidence_threshold,
    pair_round,
    select_majority,
    select_quality_weighted,
    should_stop,
    top_k,
    totals,
)
from orchestration.models import Attempt


@dataclass(frozen=True)
class Done:
    """The job is decided: publish this result under the job id."""

    result: GenerationResult


@dataclass(frozen=True)
class JudgeRound:
    """Send these judge calls as a chord; its body continues with :func:`after_round`."""

    calls: list[ProviderCall]


@dataclass(frozen=True)
class FollowUp:
    """Send one more call (aggregator or escalation); then :func:`after_call`."""

    call: ProviderCall


@dataclass(frozen=True)
class NextCandidate:
    """Early stop: no answer is good enough yet, ask candidate ``index``; then :func:`after_candidate`."""

    index: int


Step = Done | JudgeRound | FollowUp | NextCandidate


@dataclass(frozen=True)
class _Scored:
    """The answers so far with their score cards and clusters."""

    texts: dict[str, str]
    cards: dict[str, ScoreCard]
    majority: MajorityResult

    def pick(
        self,
        label: str,
        *,
        no_consensus: bool = False,
        reason: str | None = None,
        merged_from: list[str] | None = None,
    ) -> Pick:
        """``label``'s answer as the job's answer."""
        return Pick(
            chosen=label,
            text=self.texts[label],
            card=self.cards[label],
            agreement=self.majority.share_of(label),
            no_consensus=no_consensus,
            reason=reason,
            merged_from=merged_from or [],
        )


def answers(attempts: Sequence[Attempt]) -> dict[str, str]:
    """Label → text of every candidate that answered (an empty answer is still an answer)."""
    return {a.label: a.result.text or "" for a in attempts if a.ok and a.result is not None}


def score(spec: GenerationSpec, texts: dict[str, str]) -> dict[str, ScoreCard]:
    """Each answer's score card (consistency compares it with the others)."""
    if not texts:
        return {}
    cards = score_all(list(texts.values()), spec.context(), resolve_scorers(spec.scorers))
    return dict(zip(texts, cards, strict=True))


def _score_one(spec: GenerationSpec, text: str, others: dict[str, str]) -> ScoreCard:
    """The card of an answer that is not a candidate (merge, escalation), judged against them."""
    return score_all([text, *others.values()], spec.context(), resolve_scorers(spec.scorers))[0]


def _agreement(spec: GenerationSpec, text: str, others: dict[str, str]) -> float:
    """Share of the candidates' answers similar to ``text``."""
    if not others:
        return 0.0
    mine = normalise(text, spec.language)
    near = sum(similarity(mine, normalise(o, spec.language)) >= spec.similarity for o in others.values())
    return near / len(others)


def _scored(spec: GenerationSpec, progress: Progress) -> _Scored:
    texts = answers(progress.attempts)
    cards = score(spec, texts)
    majority = select_majority(texts, spec.similarity, scores=totals(cards), language=spec.language)
    return _Scored(texts, cards, majority)


def require_answers(spec: GenerationSpec, progress: Progress, now: float) -> None:
    """At least ``min_responses`` candidates must have answered, else the typed error of the job."""
    ok = answers(progress.attempts)
    if len(ok) >= spec.min_responses:
        return
    lines = ", ".join(f"{a.label}: {'ok' if a.ok else a.error_type}" for a in progress.attempts) or "none"
    cls = OrchestrationTimeoutError if spec.remaining(now) <= 0 else InsufficientResponsesError
    raise cls(
        f"job {spec.job_id}: {len(ok)} usable answers, {spec.min_responses} required ({lines})",
        job_id=spec.job_id,
        attempts=[a.summary() for a in progress.attempts],
        min_responses=spec.min_responses,
    )


def _done(spec: GenerationSpec, progress: Progress, pick: Pick, s: _Scored, now: float) -> Done:
    return Done(build_result(spec, progress, pick, s.cards, now))


def after_candidates(spec: GenerationSpec, progress: Progress, now: float | None = None) -> Step:
    """Every candidate is in: select (majority, quality, confidence) or start the next stage."""
    now = time.time() if now is None else now
    require_answers(spec, progress, now)
    s = _scored(spec, progress)
    if spec.selector == "majority":
        return _done(spec, progress, s.pick(s.majority.winner), s, now)
    best = select_quality_weighted(s.cards)
    if spec.selector == "confidence_threshold":
        d = decide_confidence_threshold(
            s.cards,
            s.majority.share_of(best),
            spec.min_score,
            spec.min_agreement,
            escalate_to=spec.escalate_to,
        )
        if d.action == "escalate":
            return FollowUp(escalate_call(spec))
        no = d.action == "no_consensus"
        return _done(spec, progress, s.pick(best, no_consensus=no, reason=d.reason if no else None), s, now)
    if spec.selector == "hybrid_merge":
        top = top_k(s.cards, spec.top_k)
        if len(top) > 1:
            return FollowUp(aggregate_call(spec, [s.texts[label] for label in top]))
        pick = s.pick(best, merged_from=top, reason="one answer only: nothing to merge")
        return _done(spec, progress, pick, s, now)
    if spec.selector == "tournament":
        return _next_round(spec, progress, list(s.texts), s, now)
    return _done(spec, progress, s.pick(best), s, now)  # quality_weighted


def _next_round(spec: GenerationSpec, progress: Progress, alive: list[str], s: _Scored, now: float) -> Step:
    """The champion once one answer is left, else the judge calls of the next round."""
    if len(alive) == 1:
        return _done(spec, progress, s.pick(alive[0]), s, now)
    progress.pairs, progress.bye = pair_round(alive, totals(s.cards))
    index = len(progress.rounds)
    return JudgeRound([judge_call(spec, index, a, b, s.texts) for a, b in progress.pairs])


def after_round(
    spec: GenerationSpec, progress: Progress, verdicts: Sequence[Attempt], now: float | None = None
) -> Step:
    """Apply one round's verdicts (a failed judge call is decided by score and recorded), go on."""
    now = time.time() if now is None else now
    s = _scored(spec, progress)
    index = len(progress.rounds)
    by_label = {v.label: v for v in verdicts}
    ordered = [by_label.get(judge_label(index, a, b)) for a, b in progress.pairs]
    rnd = apply_judgements(progress.pairs, ordered, totals(s.cards), index=index, bye=progress.bye)
    progress.rounds.append(rnd)
    progress.extra += list(verdicts)
    progress.pairs, progress.bye = [], None
    return _next_round(spec, progress, rnd.winners, s, now)


def _failure(outcome: Attempt, text: str | None) -> str:
    """Why a follow-up call gave no usable answer."""
    if outcome.ok and not (text or "").strip():
        return "returned an empty answer"
    err = outcome.error or {}
    return f"failed ({err.get('type', 'QuorumError')}: {err.get('message', '')})"


def after_call(spec: GenerationSpec, progress: Progress, outcome: Attempt, now: float | None = None) -> Done:
    """The aggregator's merge or the escalated answer; when it fails, the answer it would replace."""
    now = time.time() if now is None else now
    progress.extra.append(outcome)
    s = _scored(spec, progress)
    text = outcome.result.text if outcome.ok and outcome.result is not None else None
    usable = bool((text or "").strip())
    best = select_quality_weighted(s.cards)
    if outcome.label.startswith(AGGREGATE_LABEL):
        top = top_k(s.cards, spec.top_k)
        if not usable:
            why = f"aggregator {outcome.provider} {_failure(outcome, text)}; quality_weighted winner kept"
            return _done(spec, progress, s.pick(best, merged_from=top, reason=why), s, now)
        assert text is not None
        card = _score_one(spec, text, s.texts)
        pick = Pick(AGGREGATE_LABEL, text, card, _agreement(spec, text, s.texts), merged_from=top)
        return _done(spec, progress, pick, s, now)
    d = decide_confidence_threshold(s.cards, s.majority.share_of(best), spec.min_score, spec.min_agreement)
    if not usable:
        why = f"{d.reason}; escalation to {outcome.provider} {_failure(outcome, text)}"
        return _done(spec, progress, s.pick(best, no_consensus=True, reason=why), s, now)
    assert text is not None
    card = _score_one(spec, text, s.texts)
    s.cards[outcome.label] = card
    pick = Pick(outcome.label, text, card, _agreement(spec, text, s.texts), escalated=True, reason=d.reason)
    return _done(spec, progress, pick, s, now)


def after_candidate(
    spec: GenerationSpec, progress: Progress, outcome: Attempt, now: float | None = None
) -> Step:
    """Early stop: once an answer reaches ``quality_threshold`` (with ``min_responses`` in), stop
    asking; otherwise ask the next candidate, until none (or no time) is left."""
    now = time.time() if now is None else now
    progress.attempts.append(outcome)
    sent = len(progress.attempts)
    texts = answers(progress.attempts)
    good = len(texts) >= spec.min_responses and should_stop(
        totals(score(spec, texts)).values(), spec.quality_threshold
    )
    if good:
        progress.calls_saved = calls_saved(len(spec.candidates), sent)
    elif sent < len(spec.candidates) and spec.remaining(now) > 0:
        return NextCandidate(sent)
    return after_candidates(spec, progress, now)
