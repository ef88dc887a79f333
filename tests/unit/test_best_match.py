"""Best-match ranking, tie-breaks and per-field agreement."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestration.extraction.best_match import best_match, candidate_score, rank
from orchestration.extraction.consensus import Response
from orchestration.models import FieldValue

F = ["name", "org", "date"]


def resp(label: str, values: dict[str, tuple[object, float]], provider: str | None = None) -> Response:
    return (label, provider or label, {k: FieldValue(value=v, confidence=c) for k, (v, c) in values.items()})


def test_score_is_mean_confidence_over_all_fields() -> None:
    fields = {
        "name": FieldValue(value="Acme", confidence=0.9),
        "org": FieldValue(value="N/A", confidence=0.8),  # null-like: counts 0
    }  # "date" missing: counts 0
    score, completeness = candidate_score(fields, F)
    assert score == pytest.approx(0.9 / 3)
    assert completeness == pytest.approx(1 / 3)


def test_highest_score_wins_and_fields_report_agreement() -> None:
    rs = [
        resp("a", {"name": ("Acme", 0.9), "org": ("KDB", 0.9), "date": ("2025-03-14", 0.9)}),
        resp("b", {"name": ("ACME.", 0.95), "org": ("Shinhan", 0.9), "date": (None, 0.9)}),
        resp("c", {"name": ("Globex", 0.5), "org": ("KDB", 0.5), "date": ("March 14, 2025", 0.5)}),
    ]
    bm = best_match(rs, F)
    assert bm.winner == "a"
    assert [r.label for r in bm.ranking] == ["a", "b", "c"]
    name, org, day = bm.fields["name"], bm.fields["org"], bm.fields["date"]
    assert (name.value, name.confidence, name.votes, name.sources) == ("Acme", 0.9, 2, ["a", "b"])
    assert name.agreement == pytest.approx(2 / 3)
    assert (org.value, org.sources) == ("KDB", ["a", "c"])
    assert (day.value, day.sources) == ("2025-03-14", ["a", "c"])
    assert not any(f.abstained for f in bm.fields.values())


def test_winner_null_field_agrees_with_other_nulls() -> None:
    rs = [
        resp("a", {"name": ("Acme", 1.0), "org": (None, 0.9)}),
        resp("b", {"name": ("Acme", 0.4), "org": ("n/a", 0.9)}),
    ]
    bm = best_match(rs, ["name", "org"])
    assert bm.winner == "a"
    assert (bm.fields["org"].value, bm.fields["org"].votes) == (None, 2)


def test_dates_reported_in_iso() -> None:
    bm = best_match([resp("a", {"date": ("14 Mar 2025", 0.9)})], ["date"])
    assert bm.fields["date"].value == "2025-03-14"


def test_tie_break_completeness() -> None:
    # equal score 0.6: "a" has one field at 0.9+0.9, "b" three fields at 0.6 each
    rs = [
        resp("a", {"name": ("Acme", 0.9), "org": ("KDB", 0.9), "date": (None, 1.0)}),
        resp("b", {"name": ("Acme", 0.6), "org": ("KDB", 0.6), "date": ("2025-03-14", 0.6)}),
    ]
    assert best_match(rs, F).winner == "b"


def test_tie_break_latency() -> None:
    rs = [resp("a", {"name": ("Acme", 0.9)}), resp("b", {"name": ("Globex", 0.9)})]
    assert best_match(rs, ["name"], latencies={"a": 900.0, "b": 300.0}).winner == "b"
    assert best_match(rs, ["name"], latencies={"a": 900.0}).winner == "a"  # unknown latency ranks last


def test_tie_break_label() -> None:
    rs = [resp("zeta", {"name": ("Acme", 0.9)}), resp("alpha", {"name": ("Globex", 0.9)})]
    assert best_match(rs, ["name"]).winner == "alpha"
    assert best_match(rs, ["name"], latencies={"zeta": 5.0, "alpha": 5.0}).winner == "alpha"


def test_no_responses() -> None:
    bm = best_match([], F)
    assert bm.winner is None and bm.ranking == []
    assert all(f.abstained for f in bm.fields.values())


def test_threshold_applies_to_agreement() -> None:
    rs = [resp("a", {"name": ("Kim Min-jun", 0.9)}), resp("b", {"name": ("Kim Min-ho", 0.8)})]
    assert best_match(rs, ["name"], threshold=0.8).fields["name"].votes == 2
    assert best_match(rs, ["name"], threshold=0.95).fields["name"].votes == 1


_CONF = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])


@given(
    st.lists(
        st.tuples(st.sampled_from(["Acme", None, "Globex"]), _CONF, st.sampled_from([None, 10.0, 20.0])),
        min_size=1,
        max_size=5,
    ),
    st.randoms(use_true_random=False),
)
def test_ranking_is_order_independent(items: list[tuple[object, float, float | None]], rnd) -> None:
    rs = [resp(f"c{i}", {"name": (v, c)}) for i, (v, c, _) in enumerate(items)]
    lat = {f"c{i}": ms for i, (_, _, ms) in enumerate(items) if ms is not None}
    shuffled = list(rs)
    rnd.shuffle(shuffled)
    assert rank(rs, ["name"], lat) == rank(shuffled, ["name"], lat)
    assert best_match(rs, ["name"], latencies=lat) == best_match(shuffled, ["name"], latencies=lat)
