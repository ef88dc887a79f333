"""From candidate outcomes to an extraction job's answer: consensus or best-match, the
``min_responses`` rule, and the early-quorum decision. Pure: weights come in as arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestration.candidates import chord_labels
from orchestration.errors import InsufficientResponsesError
from orchestration.extraction.best_match import best_match
from orchestration.extraction.consensus import decided, merge, responses_from_attempts
from orchestration.extraction.jobs import ExtractionSpec
from orchestration.models import Attempt, MergedField

Accuracy = Mapping[tuple[str, str], float]


def merge_answer(
    spec: ExtractionSpec, attempts: Sequence[Attempt], *, accuracy: Accuracy, priors: Mapping[str, float]
) -> tuple[dict[str, MergedField], str | None]:
    """The merged (consensus) or selected (best-match) fields and the winning label, if any."""
    ok = [a for a in attempts if a.ok]
    if len(ok) < spec.min_responses:
        lines = ", ".join(f"{a.label}: {'ok' if a.ok else a.error_type}" for a in attempts) or "none"
        raise InsufficientResponsesError(
            f"job {spec.job_id}: {len(ok)} usable answers, {spec.min_responses} required ({lines})",
            job_id=spec.job_id,
            attempts=[a.summary() for a in attempts],
            min_responses=spec.min_responses,
        )
    responses = responses_from_attempts(ok)
    if spec.strategy == "best_match":
        chosen = best_match(
            responses, spec.fields, threshold=spec.similarity, latencies={a.label: a.latency_ms for a in ok}
        )
        return chosen.fields, chosen.winner
    fields = merge(
        responses,
        spec.fields,
        accuracy=accuracy,
        priors=priors,
        threshold=spec.similarity,
        min_agreement=spec.min_agreement,
    )
    return fields, None


def early_pending(spec: ExtractionSpec, attempts: Sequence[Attempt]) -> list[str]:
    """The providers still outstanding when an early answer is worth checking for (enough
    answers in, some still out), else none: a cheap test before reading any weights."""
    if spec.strategy != "consensus" or not spec.early_quorum:
        return []
    if sum(1 for a in attempts if a.ok) < spec.min_responses:
        return []
    answered = {a.label for a in attempts}
    labels = chord_labels(spec.candidates)
    # Nothing pending means everything is in: the chord body answers.
    return [c.provider for c, label in zip(spec.candidates, labels, strict=True) if label not in answered]


def early_answer_ready(
    spec: ExtractionSpec, attempts: Sequence[Attempt], *, accuracy: Accuracy, priors: Mapping[str, float]
) -> bool:
    """True when the consensus answers already in cannot be overturned by the outstanding ones."""
    pending = early_pending(spec, attempts)
    if not pending:
        return False
    labels = chord_labels(spec.candidates)
    ok = [a for a in attempts if a.ok]
    failed = sum(1 for a in attempts if not a.ok)
    return decided(
        responses_from_attempts(ok),
        len(labels) - failed,
        spec.fields,
        pending=pending,
        accuracy=accuracy,
        priors=priors,
        threshold=spec.similarity,
        min_agreement=spec.min_agreement,
    )
