"""Selectors of generation jobs: pure functions over the candidates that answered.

Failed candidates are excluded by the caller (and reported in the result); every function here
is deterministic, so a redelivered chord body picks the same answer. Ties always go to the
earlier label, i.e. the earlier candidate in the job's order (mappings keep insertion order).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

from orchestration.errors import InsufficientResponsesError, InvalidOutputError, QuorumError
from orchestration.generation.models import JudgeFailure, TournamentRound
from orchestration.generation.scoring import ScoreCard, normalise, similarity, strip_fence
from orchestration.models import Attempt

#: Default similarity (normalised Indel, 0..1) at which two answers count as the same answer.
DEFAULT_SIMILARITY = 0.85

Letter = Literal["A", "B"]
#: A judge call's outcome: raw judge text, a provider-call outcome, an error (as raised or as
#: ``QuorumError.to_dict()``), or None when nothing came back.
Verdict = str | Attempt | BaseException | Mapping[str, Any] | None


def _nonempty(items: Sized, what: str) -> None:
    """Selecting among nothing is a job outcome, not a crash: raise the typed error."""
    if not len(items):
        raise InsufficientResponsesError(f"no candidate answered; cannot select by {what}")


def totals(cards: Mapping[str, ScoreCard]) -> dict[str, float]:
    """Label → weighted score, in the cards' order."""
    return {label: card.total for label, card in cards.items()}


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Labels best first; equal scores keep their original order (earlier label first)."""
    return sorted(scores, key=lambda label: -scores[label])  # sorted() is stable


# --------------------------------------------------------------------------- majority


@dataclass(frozen=True, slots=True)
class MajorityResult:
    """The winning cluster of similar answers, its representative and the share agreeing."""

    winner: str
    cluster: tuple[str, ...]
    clusters: tuple[tuple[str, ...], ...]
    agreement: float

    def share_of(self, label: str) -> float:
        """Share of the answers in ``label``'s cluster (0.0 for an unknown label)."""
        total = sum(len(c) for c in self.clusters)
        return next((len(c) / total for c in self.clusters if label in c), 0.0)


def cluster(texts: Mapping[str, str], threshold: float, language: str | None = None) -> list[list[str]]:
    """Leader clustering: each answer joins the most similar cluster leader ≥ threshold, else leads."""
    leaders: list[tuple[str, str]] = []  # (label, normalised text) of each cluster's first member
    clusters: list[list[str]] = []
    memo: dict[tuple[str, str], float] = {}
    for label, text in texts.items():
        norm = normalise(text, language)
        best, best_sim = -1, threshold
        for i, (_, lead) in enumerate(leaders):
            sim = similarity(norm, lead, memo)
            if sim >= best_sim and (best < 0 or sim > best_sim):  # ties → earlier cluster
                best, best_sim = i, sim
        if best < 0:
            leaders.append((label, norm))
            clusters.append([label])
        else:
            clusters[best].append(label)
    return clusters


def select_majority(
    texts: Mapping[str, str],
    threshold: float = DEFAULT_SIMILARITY,
    scores: Mapping[str, float] | None = None,
    language: str | None = None,
) -> MajorityResult:
    """The largest cluster of similar answers wins (ties: higher mean score, then earlier cluster);
    its representative is its best-scored member (or its first)."""
    _nonempty(texts, "majority")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"similarity threshold {threshold} is not in (0, 1]")
    scores = scores or {}
    clusters = cluster(texts, threshold, language)

    def mean(c: list[str]) -> float:
        """Mean quality score of a cluster (0 for unscored members)."""
        return sum(scores.get(label, 0.0) for label in c) / len(c)

    # max() keeps the first maximum, and clusters are ordered by their first member.
    win = max(clusters, key=lambda c: (len(c), mean(c)))
    rep = max(win, key=lambda label: scores.get(label, 0.0))
    return MajorityResult(
        winner=rep,
        cluster=tuple(win),
        clusters=tuple(tuple(c) for c in clusters),
        agreement=len(win) / len(texts),
    )


# --------------------------------------------------------------------------- quality / top-K


def select_quality_weighted(cards: Mapping[str, ScoreCard]) -> str:
    """The label with the highest weighted score; ties → the earlier label."""
    _nonempty(cards, "quality")
    return ranked(totals(cards))[0]


def top_k(cards: Mapping[str, ScoreCard], k: int) -> list[str]:
    """The ``k`` best labels, best first, for hybrid merge's single aggregator call."""
    _nonempty(cards, "hybrid merge")
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    return ranked(totals(cards))[:k]


# --------------------------------------------------------------------------- tournament


def pair_round(
    labels: Sequence[str], scores: Mapping[str, float] | None = None
) -> tuple[list[tuple[str, str]], str | None]:
    """Seeded pairs of one round: best vs worst, 2nd vs 2nd-worst, ...; the top seed gets the bye.

    Best-vs-worst (bracket seeding) keeps the strongest answers apart until the final, where
    the judge's call matters most; ``a`` is always the higher seed. Without scores the given
    order is the seeding.
    """
    _nonempty(labels, "tournament")
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels in {list(labels)}")
    order = ranked({label: (scores or {}).get(label, 0.0) for label in labels})
    bye = order.pop(0) if len(order) % 2 else None
    pairs = [(order[i], order[-1 - i]) for i in range(len(order) // 2)]
    return pairs, bye


_WINNER_RE = re.compile(r"^\W*winner\W*[:=]\W*([ab])\b", re.IGNORECASE)
_BRACE_RE = re.compile(r"\{")


def _letter(value: object) -> Letter | None:
    """``A``/``B`` from a verdict value such as ``"a"``, ``"**B**"`` or ``"Candidate A"``."""
    if not isinstance(value, str):
        return None
    s = value.strip().strip("\"'*`.!()[]<> \n").upper()
    for prefix in ("CANDIDATE_", "CANDIDATE ", "ANSWER_", "ANSWER "):
        s = s.removeprefix(prefix)
    return "A" if s == "A" else "B" if s == "B" else None


def _json_values(body: str) -> Iterator[object]:
    """The body if it is JSON as a whole, then each JSON value opening at one of its first 20 braces."""
    decoder = json.JSONDecoder()
    starts = [0, *(m.start() for m in islice(_BRACE_RE.finditer(body), 20))]
    for n, start in enumerate(starts):
        try:
            value, end = decoder.raw_decode(body, start)
        except ValueError:
            continue
        if n or end == len(body):  # an embedded object may be followed by prose; the body may not
            yield value


def parse_verdict(text: str) -> Letter | None:
    """The judge's pick from ``{"winner": "A"}`` (possibly fenced or wrapped) or a bare A/B; else None."""
    body = strip_fence(text).strip()
    for data in _json_values(body):
        if isinstance(data, str):
            return _letter(data)
        if isinstance(data, dict):
            winner = [v for k, v in data.items() if str(k).lower() == "winner"]
            if winner:
                return _letter(winner[0])
    m = _WINNER_RE.match(body)
    return _letter(m.group(1)) if m else _letter(body)


def _read_verdict(verdict: Verdict) -> tuple[Letter | None, dict[str, Any] | None]:
    """A judge outcome as (letter, None) or (None, the error that stands in for a verdict)."""
    if isinstance(verdict, Attempt):
        if verdict.ok and verdict.result is not None and verdict.result.text is not None:
            verdict = verdict.result.text
        else:
            return None, verdict.error or {"type": "QuorumError", "message": "judge call not made"}
    if isinstance(verdict, str):
        letter = parse_verdict(verdict)
        if letter is None:
            err = InvalidOutputError(f"unparseable judge verdict: {verdict[:200]!r}")
            return None, err.to_dict()
        return letter, None
    if isinstance(verdict, QuorumError):
        return None, verdict.to_dict()
    if isinstance(verdict, BaseException):
        return None, {"type": type(verdict).__name__, "message": str(verdict)}
    if verdict is None:
        return None, {"type": "QuorumError", "message": "the judge returned nothing"}
    return None, dict(verdict)


def apply_judgements(
    pairs: Sequence[tuple[str, str]],
    verdicts: Sequence[Verdict],
    scores: Mapping[str, float],
    *,
    index: int = 0,
    bye: str | None = None,
) -> TournamentRound:
    """Winners of one round; a failed or unparseable judgement falls back to the quality score
    (ties → ``a``, the higher seed) and is recorded, so the round always completes."""
    if len(pairs) != len(verdicts):
        raise ValueError(f"{len(pairs)} pairs but {len(verdicts)} verdicts")
    winners: list[str] = []
    decided_by: list[Literal["judge", "score"]] = []
    failures: list[JudgeFailure] = []
    for (a, b), verdict in zip(pairs, verdicts, strict=True):
        letter, error = _read_verdict(verdict)
        if letter is not None:
            winners.append(a if letter == "A" else b)
            decided_by.append("judge")
            continue
        winner = a if scores.get(a, 0.0) >= scores.get(b, 0.0) else b
        winners.append(winner)
        decided_by.append("score")
        failures.append(JudgeFailure(a=a, b=b, winner=winner, error=error or {}))
    return TournamentRound(
        index=index,
        pairs=list(pairs),
        bye=bye,
        winners=winners + ([bye] if bye is not None else []),
        decided_by=decided_by,
        judge_errors=failures,
    )


def tournament_calls(n: int) -> int:
    """Judge calls a single-elimination tournament over ``n`` answers needs (n - 1)."""
    return max(0, n - 1)


def tournament_winner(rounds: Sequence[TournamentRound]) -> str | None:
    """The champion once the last round left exactly one label, else None."""
    return rounds[-1].winners[0] if rounds and len(rounds[-1].winners) == 1 else None


def run_tournament(
    labels: Sequence[str], scores: Mapping[str, float], judge: Callable[[str, str], Verdict]
) -> tuple[str, list[TournamentRound]]:
    """Play rounds (re-seeded by score each time) until one label remains; ``judge(a, b)`` may
    return a verdict or raise. The Celery layer runs the same loop with a chord per round."""
    alive = list(labels)
    _nonempty(alive, "tournament")
    rounds: list[TournamentRound] = []
    while len(alive) > 1:
        pairs, bye = pair_round(alive, scores)
        verdicts: list[Verdict] = []
        for a, b in pairs:
            try:
                verdicts.append(judge(a, b))
            except Exception as e:  # a failed judge call decides nothing by itself
                verdicts.append(e)
        rnd = apply_judgements(pairs, verdicts, scores, index=len(rounds), bye=bye)
        rounds.append(rnd)
        alive = rnd.winners
    return alive[0], rounds


# --------------------------------------------------------------------------- confidence threshold


@dataclass(frozen=True, slots=True)
class Decision:
    """What the confidence-threshold selector concluded, and why."""

    action: Literal["accept", "no_consensus", "escalate"]
    chosen: str | None
    score: float | None
    agreement: float
    reason: str


def decide_confidence_threshold(
    cards: Mapping[str, ScoreCard],
    agreement: float,
    min_score: float,
    min_agreement: float,
    *,
    escalate_to: str | None = None,
    escalated: bool = False,
) -> Decision:
    """Accept the best-scored answer when its score and agreement reach the bars; otherwise
    escalate once (if a stronger provider is named), else report no consensus with the best
    answer anyway. ``agreement`` is the best answer's cluster share (``MajorityResult.share_of``)."""
    can_escalate = escalate_to is not None and not escalated
    if not cards:
        action: Literal["no_consensus", "escalate"] = "escalate" if can_escalate else "no_consensus"
        return Decision(action, None, None, 0.0, "no candidate answered")
    best = select_quality_weighted(cards)
    score = cards[best].total
    short = []
    if score < min_score:
        short.append(f"score {score:.3f} < min_score {min_score:g}")
    if agreement < min_agreement:
        short.append(f"agreement {agreement:.3f} < min_agreement {min_agreement:g}")
    if not short:
        return Decision("accept", best, score, agreement, "score and agreement reach the bars")
    reason = "; ".join(short)
    if can_escalate:
        return Decision("escalate", best, score, agreement, f"{reason}: escalating to {escalate_to}")
    return Decision("no_consensus", best, score, agreement, reason)


# --------------------------------------------------------------------------- early stop


def should_stop(scores_so_far: Iterable[float | None], quality_threshold: float | None) -> bool:
    """Whether an answer already reaches ``quality_threshold`` so later candidates need not be asked."""
    if quality_threshold is None:
        return False
    return any(s is not None and s >= quality_threshold for s in scores_so_far)


def calls_saved(planned: int, sent: int) -> int:
    """Planned provider calls that early stop spared (never negative)."""
    return max(0, planned - sent)
