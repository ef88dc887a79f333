"""Field-level weighted consensus over several candidates' extractions, early quorum, and the
accuracy bookkeeping that feeds the weights back.

Rules:

* **Votes.** Each answering candidate casts one vote per field. Its weight is
  ``accuracy(provider, field) × confidence × prior(provider)``: historical accuracy (Laplace
  prior 0.5 when unknown), the stated confidence clamped to ``[confidence_floor, 1]`` (so a
  provider that states 0 still counts a little), and ``ProviderConfig.weight``. A candidate that
  omitted the field does not vote on it.
* **Clusters.** Values are normalised (:mod:`.normalize`) and grouped by single-link over
  Jaro-Winkler similarity (free text only, equal digit runs required). Single-link is order
  independent and only ever *merges* clusters as answers arrive, which makes early quorum sound.
* **Null** is its own cluster and competes like any value: it wins exactly when it is the
  heaviest cluster. A split non-null camp does *not* pool its weight against null, because that
  would let two disagreeing weak models overrule a strong model's null.
* **Winner.** Heaviest cluster; ties on weight go to more votes, then the higher best
  historical accuracy among its voters, then the field abstains. A winner with fewer than
  ``min_agreement`` votes abstains too (value None, ``abstained=True``, confidence 0; votes,
  agreement and sources still describe the leading cluster, or all tied ones, to show why).
* **Strong vs weak.** Weights are summed, so two weak models (0.5 each) that *agree* outweigh
  one strong model (0.95) — agreement of independent weak models is evidence. Two weak models
  that *disagree* each weigh 0.5 < 0.95 and cannot overrule the strong one.
* **Confidence** = ``share × corroboration``: share = winner weight / total weight, and
  corroboration = ``1 − Π(1 − p_i)`` over the winner's voters with ``p_i = accuracy × confidence``
  (a noisy-OR: one voter at p=0.9 gives 0.9, three give 0.999). A lone answer is therefore not
  reported as certain just because nobody contradicted it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from orchestration.extraction.normalize import Norm, prepare, same_value
from orchestration.models import Attempt, FieldValue, MergedField

#: One answering candidate: (label, provider, fields).
Response = tuple[str, str, Mapping[str, FieldValue]]
#: Historical accuracy per (provider, field).
Accuracy = Mapping[tuple[str, str], float]

DEFAULT_THRESHOLD = 0.85
DEFAULT_ACCURACY = 0.5  # Laplace prior (0 + 1) / (0 + 2)
_CONFIDENCE_FLOOR = 0.05
_EPS = 1e-9


def responses_from_attempts(attempts: Iterable[Attempt]) -> list[Response]:
    """The successful attempts of a chord as consensus input (label falls back to provider)."""
    return [
        (a.label or a.provider, a.provider, a.result.fields)
        for a in attempts
        if a.ok and a.result is not None
    ]


@dataclass(frozen=True, slots=True)
class _Weigher:
    """Turns (provider, field, stated confidence) into vote weights."""

    accuracy: Accuracy
    priors: Mapping[str, float]
    default_accuracy: float
    confidence_floor: float

    def acc(self, provider: str, field: str) -> float:
        """Historical accuracy of a provider on a field, the prior when unknown."""
        return min(max(self.accuracy.get((provider, field), self.default_accuracy), 0.0), 1.0)

    def prior(self, provider: str) -> float:
        """The provider's configured prior weight (1.0 when not given)."""
        return self.priors.get(provider, 1.0)

    def max_weight(self, provider: str | None, field: str) -> float:
        """The heaviest vote a provider could still cast (unknown: the best accuracy and prior)."""
        if provider is None:
            known = [a for (_, f), a in self.accuracy.items() if f == field]
            best = min(max([self.default_accuracy, *known]), 1.0)
            return best * max([1.0, *self.priors.values()])
        return self.acc(provider, field) * self.prior(provider)


@dataclass(slots=True)
class _Vote:
    """One candidate's vote on one field, with its weight."""

    label: str
    provider: str
    norm: Norm
    accuracy: float
    prob: float  # accuracy × confidence: chance this vote is right
    weight: float  # prob × prior


@dataclass(slots=True)
class Cluster:
    """Votes that agree on one value of one field (``key`` None is the null cluster)."""

    key: str | None
    votes: list[_Vote]
    weight: float
    best_accuracy: float
    #: Sort key, best first: weight, votes, best historical accuracy (rounded, so float noise ties).
    rank: tuple[float, int, float] = (0.0, 0, 0.0)

    def __post_init__(self) -> None:
        """Compute the rank once; the members never change after construction."""
        self.rank = (-round(self.weight, 9), -len(self.votes), -round(self.best_accuracy, 9))

    def representative(self) -> _Vote:
        """The highest-weight member (label breaks ties, so the choice is order independent)."""
        return min(self.votes, key=lambda v: (-round(v.weight, 12), v.label))

    def labels(self) -> list[str]:
        """Voter labels, heaviest first."""
        return [v.label for v in sorted(self.votes, key=lambda v: (-round(v.weight, 12), v.label))]


def _votes(responses: Sequence[Response], field: str, weigher: _Weigher) -> list[_Vote]:
    """Every response's vote on one field (responses without the field do not vote)."""
    out = []
    for label, provider, fields in responses:
        fv = fields.get(field)
        if fv is None:
            continue
        acc = weigher.acc(provider, field)
        conf = min(max(fv.confidence, weigher.confidence_floor), 1.0)
        prob = acc * conf
        out.append(
            _Vote(label, provider, prepare(field, fv.value), acc, prob, prob * weigher.prior(provider))
        )
    return out


def _make(key: str | None, votes: list[_Vote]) -> Cluster:
    """A cluster with its order-independent weight sum (fsum) and best voter accuracy."""
    return Cluster(key, votes, math.fsum(v.weight for v in votes), max(v.accuracy for v in votes))


def _cluster_votes(votes: Sequence[_Vote], threshold: float) -> list[Cluster]:
    """Single-link clusters of one field's votes, best first (null is a separate cluster)."""
    by_key: dict[str, list[_Vote]] = {}
    nulls = []
    for v in votes:
        if v.norm.key is None:
            nulls.append(v)
        else:
            by_key.setdefault(v.norm.key, []).append(v)
    keys = sorted(by_key)
    norms = [Norm(k, all(v.norm.fuzzy for v in by_key[k]), None, by_key[k][0].norm.digits) for k in keys]
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        """Union-find root with path halving."""
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            if root(i) != root(j) and same_value(norms[i], norms[j], threshold):
                parent[root(j)] = root(i)
    groups: dict[int, list[str]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(root(i), []).append(k)
    clusters = [_make(ks[0], [v for k in ks for v in by_key[k]]) for ks in groups.values()]
    if nulls:
        clusters.append(_make(None, nulls))
    clusters.sort(key=lambda c: (*c.rank, c.key is None, c.key or ""))
    for c in clusters:  # the key shown is the representative's
        c.key = c.representative().norm.key
    return clusters


def _confidence(winner: Cluster, total_weight: float, n_votes: int) -> float:
    """Weight share × noisy-OR of the winner's voters (product taken in sorted order)."""
    share = winner.weight / total_weight if total_weight > 0 else len(winner.votes) / n_votes
    miss = 1.0
    for p in sorted(v.prob for v in winner.votes):
        miss *= 1.0 - min(p, 1.0)
    return min(max(share * (1.0 - miss), 0.0), 1.0)


def _merge_field(
    votes: Sequence[_Vote], n_responses: int, threshold: float, min_agreement: int
) -> MergedField:
    """Merge one field's votes into a :class:`MergedField` (see the module rules)."""
    clusters = _cluster_votes(votes, threshold)
    if not clusters:
        return MergedField(abstained=True)
    best = clusters[0]
    tied = [c for c in clusters if c.rank == best.rank]
    agreement = len(best.votes) / n_responses if n_responses else 0.0
    if len(tied) > 1:
        labels = sorted(label for c in tied for label in c.labels())
        return MergedField(votes=len(best.votes), agreement=agreement, sources=labels, abstained=True)
    if len(best.votes) < min_agreement:
        return MergedField(votes=len(best.votes), agreement=agreement, sources=best.labels(), abstained=True)
    total = math.fsum(c.weight for c in clusters)
    return MergedField(
        value=best.representative().norm.display,
        confidence=_confidence(best, total, len(votes)),
        agreement=agreement,
        votes=len(best.votes),
        sources=best.labels(),
    )


def merge(
    responses: Sequence[Response],
    fields: Iterable[str],
    *,
    accuracy: Accuracy | None = None,
    priors: Mapping[str, float] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_agreement: int = 1,
    default_accuracy: float = DEFAULT_ACCURACY,
    confidence_floor: float = _CONFIDENCE_FLOOR,
) -> dict[str, MergedField]:
    """Weighted field-level consensus of the answering candidates, one MergedField per field."""
    weigher = _Weigher(accuracy or {}, priors or {}, default_accuracy, confidence_floor)
    return {
        f: _merge_field(_votes(responses, f, weigher), len(responses), threshold, min_agreement)
        for f in fields
    }


def _field_decided(
    votes: Sequence[_Vote], remaining: int, extra_weight: float, threshold: float, min_agreement: int
) -> bool:
    """Whether no set of ``remaining`` further votes (total weight ≤ extra) can change the field."""
    clusters = _cluster_votes(votes, threshold)
    null_votes = sum(len(c.votes) for c in clusters if c.key is None)
    most_votes = max(len(votes) - null_votes, null_votes)
    if most_votes + remaining < min_agreement:
        return True  # abstains whatever comes
    if not clusters or len(clusters[0].votes) < min_agreement:
        return False
    leader = clusters[0]
    # Single-link can bridge every other cluster into one: bound the challenger by all of them.
    others = math.fsum(c.weight for c in clusters[1:])
    return leader.weight > others + extra_weight + _EPS


def decided(
    responses: Sequence[Response],
    asked_total: int,
    fields: Iterable[str],
    *,
    pending: Sequence[str] = (),
    accuracy: Accuracy | None = None,
    priors: Mapping[str, float] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_agreement: int = 1,
    default_accuracy: float = DEFAULT_ACCURACY,
    confidence_floor: float = _CONFIDENCE_FLOOR,
) -> bool:
    """Early quorum: True when the outstanding candidates cannot change any field's winner.

    ``asked_total`` counts the candidates that may still answer plus those that did;
    ``pending`` names the providers of the outstanding ones (unnamed ones are assumed to vote
    with the best accuracy known for the field and the largest prior). Each outstanding vote
    is taken at its maximum weight ``accuracy × 1.0 × prior`` and assumed to side with the
    challengers; all non-leading clusters count as one challenger, because a late answer can
    bridge them into one single-link cluster.
    """
    remaining = asked_total - len(responses)
    if remaining <= 0:
        return True
    if not responses:
        return False
    weigher = _Weigher(accuracy or {}, priors or {}, default_accuracy, confidence_floor)
    outstanding: list[str | None] = [*list(pending)[:remaining]]
    outstanding += [None] * (remaining - len(outstanding))
    for f in fields:
        extra = math.fsum(weigher.max_weight(p, f) for p in outstanding)
        if not _field_decided(_votes(responses, f, weigher), remaining, extra, threshold, min_agreement):
            return False
    return True


def accuracy_updates(
    responses: Sequence[Response], merged: Mapping[str, MergedField], *, min_votes: int = 2
) -> list[tuple[str, str, bool]]:
    """(provider, field, agreed with the final answer) per response and field, for Redis counts.

    Only fields the merge decided with at least ``min_votes`` votes count: an abstention has no
    answer to agree with, and a lone winner would only grade itself.
    """
    out = []
    for field, mf in merged.items():
        if mf.abstained or mf.votes < min_votes:
            continue
        winners = set(mf.sources)
        out.extend(
            (provider, field, label in winners) for label, provider, fields in responses if field in fields
        )
    return out
