"""Best-match selection: pick the one candidate whose whole answer looks best, then report how
far the others agree with it field by field.

Score of a candidate = the mean over ALL schema fields of its stated confidence, where a null,
null-like ("N/A") or missing field counts 0. This equals ``mean confidence of the filled fields
× completeness``, so an answer that is confident about few fields loses to one that is about as
confident about more. (Caveat: it rewards filling a field the email does not state; consensus
is the strategy that guards against that.)

Tie-break, in order: higher score, higher completeness, lower latency (unknown latency ranks
last), then label in ascending order. Scores are compared rounded to 1e-9, so float noise never
decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestration.extraction.consensus import DEFAULT_THRESHOLD, Response
from orchestration.extraction.normalize import prepare, same_value
from orchestration.models import FieldValue, MergedField


@dataclass(frozen=True, slots=True)
class Ranked:
    """One candidate's standing: its score, completeness and latency."""

    label: str
    provider: str
    score: float
    completeness: float
    latency_ms: float | None

    def sort_key(self) -> tuple[float, float, float, str]:
        """Best first: score, completeness, latency, label."""
        latency = math.inf if self.latency_ms is None else self.latency_ms
        return (-round(self.score, 9), -round(self.completeness, 9), latency, self.label)


@dataclass(frozen=True, slots=True)
class BestMatch:
    """The chosen candidate (None when nobody answered), its fields and the full ranking."""

    winner: str | None
    fields: dict[str, MergedField]
    ranking: list[Ranked]


def candidate_score(fields: Mapping[str, FieldValue], field_names: Sequence[str]) -> tuple[float, float]:
    """(score, completeness) of one answer over all schema fields (null/missing count 0)."""
    if not field_names:
        return 0.0, 0.0
    filled = 0
    total = 0.0
    for name in field_names:
        fv = fields.get(name)
        if fv is None or prepare(name, fv.value).key is None:
            continue
        filled += 1
        total += min(max(fv.confidence, 0.0), 1.0)
    return total / len(field_names), filled / len(field_names)


def rank(
    responses: Sequence[Response],
    field_names: Sequence[str],
    latencies: Mapping[str, float] | None = None,
) -> list[Ranked]:
    """All candidates, best first, by the module's documented order."""
    lat = latencies or {}
    ranked = [
        Ranked(label, provider, *candidate_score(fields, field_names), lat.get(label))
        for label, provider, fields in responses
    ]
    return sorted(ranked, key=Ranked.sort_key)


def best_match(
    responses: Sequence[Response],
    field_names: Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    latencies: Mapping[str, float] | None = None,
) -> BestMatch:
    """Choose the best candidate; each field reports its value and the others' agreement."""
    field_names = list(field_names)
    ranking = rank(responses, field_names, latencies)
    if not ranking:
        return BestMatch(None, {f: MergedField(abstained=True) for f in field_names}, [])
    winner = ranking[0].label
    by_label = {label: fields for label, _, fields in responses}
    order = [r.label for r in ranking]  # winner first, then the others by standing
    chosen = by_label[winner]
    out: dict[str, MergedField] = {}
    for name in field_names:
        mine = chosen.get(name) or FieldValue()
        norm = prepare(name, mine.value)
        sources = [
            label
            for label in order
            if same_value(norm, prepare(name, (by_label[label].get(name) or FieldValue()).value), threshold)
        ]
        out[name] = MergedField(
            value=norm.display,
            confidence=min(max(mine.confidence, 0.0), 1.0),
            agreement=len(sources) / len(order),
            votes=len(sources),
            sources=sources,
        )
    return BestMatch(winner, out, ranking)
