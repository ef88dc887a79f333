"""Weighted field-level consensus, early quorum and accuracy grading."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.extraction import accuracy_updates, responses_from_attempts
from orchestration.extraction.consensus import Response, decided, merge
from orchestration.models import Attempt, FieldValue, ProviderResult
from orchestration.state import laplace_accuracy


def resp(label: str, provider: str | None = None, conf: float = 0.9, **values: object) -> Response:
    """A response whose fields all carry the same stated confidence."""
    return (label, provider or label, {k: FieldValue(value=v, confidence=conf) for k, v in values.items()})


def one(responses: list[Response], field: str = "name", **kw: object):
    return merge(responses, [field], **kw)[field]


def test_unanimous() -> None:
    m = one([resp("a", name="Acme"), resp("b", name="Acme"), resp("c", name="Acme")])
    assert (m.value, m.votes, m.agreement, m.abstained) == ("Acme", 3, 1.0, False)
    assert m.sources == ["a", "b", "c"]


def test_near_miss_spellings_join_and_the_heaviest_spelling_is_reported() -> None:
    rs = [
        resp("a", conf=0.6, name="Kim Min-jun"),
        resp("b", conf=0.9, name="kim minjun"),
        resp("c", conf=0.7, name="Kim Min-jun."),
    ]
    m = one(rs)
    assert m.votes == 3
    assert m.value == "kim minjun"  # original text of the highest-weight member
    assert m.sources == ["b", "c", "a"]  # heaviest first


def test_different_names_do_not_join() -> None:
    m = one([resp("a", name="Acme"), resp("b", name="Globex"), resp("c", name="Acme")])
    assert (m.value, m.votes, m.sources) == ("Acme", 2, ["a", "c"])
    assert m.agreement == pytest.approx(2 / 3)


def test_threshold_is_configurable() -> None:
    rs = [resp("a", conf=0.9, name="Kim Min-jun"), resp("b", conf=0.8, name="Kim Min-ho")]
    assert one(rs, threshold=0.8).votes == 2
    loose = one(rs, threshold=0.95)
    assert (loose.value, loose.votes) == ("Kim Min-jun", 1)


def test_dates_in_many_formats_agree_and_are_reported_in_iso() -> None:
    rs = [
        resp("a", conf=0.9, date="March 14, 2025"),
        resp("b", conf=0.8, date="2025년 3월 14일"),
        resp("c", conf=0.7, date="2025-03-15"),
    ]
    m = one(rs, "date")
    assert (m.value, m.votes, m.sources) == ("2025-03-14", 2, ["a", "b"])


def test_missing_field_is_no_vote() -> None:
    rs = [resp("a", name="Acme"), resp("b", other="x"), resp("c", name="Acme")]
    m = one(rs)
    assert (m.votes, m.agreement) == (2, pytest.approx(2 / 3))


def test_no_responses_abstain() -> None:
    assert all(m.abstained and m.value is None for m in merge([], ["a", "b"]).values())


def test_accuracy_and_confidence_weight_votes() -> None:
    rs = [resp("s", conf=0.9, name="Acme"), resp("w1", conf=0.9, name="Globex")]
    acc = {("s", "name"): 0.9, ("w1", "name"): 0.6}
    assert one(rs, accuracy=acc).value == "Acme"
    acc = {("s", "name"): 0.6, ("w1", "name"): 0.9}
    assert one(rs, accuracy=acc).value == "Globex"
    # stated confidence counts too
    rs = [resp("s", conf=0.3, name="Acme"), resp("w1", conf=0.9, name="Globex")]
    assert one(rs, accuracy={("s", "name"): 0.9, ("w1", "name"): 0.6}).value == "Globex"


def test_provider_prior_weight() -> None:
    rs = [resp("big", name="Acme"), resp("x", name="Globex"), resp("y", name="Globex")]
    assert one(rs).value == "Globex"
    assert one(rs, priors={"big": 3.0}).value == "Acme"


def test_missing_accuracy_uses_laplace_prior() -> None:
    assert laplace_accuracy(0, 0) == 0.5
    assert laplace_accuracy(9, 10) == pytest.approx(10 / 12)
    assert laplace_accuracy(5, 3) == 0.8  # clamped: correct never exceeds total
    rs = [resp("s", conf=0.9, name="Acme"), resp("u", conf=0.9, name="Globex")]
    # "u" has no history → 0.5, below s's 0.6
    assert one(rs, accuracy={("s", "name"): 0.6}).value == "Acme"
    assert one(rs, accuracy={("s", "name"): 0.4}).value == "Globex"


STRONG = {("strong", "name"): 0.95, ("weak1", "name"): 0.5, ("weak2", "name"): 0.5}


def test_two_disagreeing_weak_models_do_not_overrule_the_strong_one() -> None:
    rs = [
        resp("strong", conf=0.9, name="Acme"),
        resp("weak1", conf=0.9, name="Globex"),
        resp("weak2", conf=0.9, name="Initech"),
    ]
    m = one(rs, accuracy=STRONG)
    assert (m.value, m.votes, m.sources) == ("Acme", 1, ["strong"])
    # ... also when the weak ones are listed first, and when they disagree by saying null
    assert one(rs[::-1], accuracy=STRONG).value == "Acme"
    rs2 = [rs[0], resp("weak1", conf=0.9, name=None), rs[2]]
    assert one(rs2, accuracy=STRONG).value == "Acme"


def test_two_agreeing_weak_models_win_when_their_combined_weight_is_higher() -> None:
    rs = [
        resp("strong", conf=0.9, name="Acme"),
        resp("weak1", conf=0.9, name="Globex"),
        resp("weak2", conf=0.9, name="Globex"),
    ]
    assert one(rs, accuracy=STRONG).value == "Globex"  # 0.45 + 0.45 > 0.855
    # ... but not when they are unsure enough that their sum stays below the strong vote
    rs = [rs[0], resp("weak1", conf=0.6, name="Globex"), resp("weak2", conf=0.6, name="Globex")]
    assert one(rs, accuracy=STRONG).value == "Acme"  # 0.3 + 0.3 < 0.855


def test_weighting_beats_plain_majority_in_simulation() -> None:
    """A strong model (95 %) and two weak ones (50 %, independent errors), 2000 seeded trials."""
    rng = random.Random(7)
    weighted = plain = strong_alone = 0
    for _ in range(2000):
        rs = []
        for label, p in (("strong", 0.95), ("weak1", 0.5), ("weak2", 0.5)):
            value = "Acme Corp" if rng.random() < p else f"wrong {rng.randrange(50)}"
            rs.append(resp(label, conf=0.9, name=value))
        strong_alone += rs[0][2]["name"].value == "Acme Corp"
        weighted += one(rs, accuracy=STRONG).value == "Acme Corp"
        plain += one(rs).value == "Acme Corp"
    assert weighted >= strong_alone  # never worse than trusting the strong model alone
    assert plain < strong_alone - 300  # a plain vote abstains whenever all three disagree


def test_tie_break_weight_first() -> None:
    rs = [resp("a", conf=0.9, name="Acme"), resp("b", conf=0.8, name="Globex")]
    assert one(rs).value == "Acme"


def test_tie_break_votes_on_equal_weight() -> None:
    # Acme: 0.5×0.5 + 0.5×0.5 = 0.5 with 2 votes; Globex: 0.5×1.0 = 0.5 with 1 vote
    rs = [
        resp("a", conf=0.5, name="Acme"),
        resp("b", conf=0.5, name="Acme"),
        resp("c", conf=1.0, name="Globex"),
    ]
    m = one(rs)
    assert (m.value, m.votes, m.abstained) == ("Acme", 2, False)


def test_tie_break_best_accuracy_on_equal_weight_and_votes() -> None:
    # Acme: 0.8 × 0.5 = 0.4; Globex: 0.5 × 0.8 = 0.4; one vote each; Acme's voter is more accurate
    rs = [resp("a", conf=0.5, name="Acme"), resp("b", conf=0.8, name="Globex")]
    m = one(rs, accuracy={("a", "name"): 0.8, ("b", "name"): 0.5})
    assert (m.value, m.abstained) == ("Acme", False)


def test_tie_break_abstains_when_everything_ties() -> None:
    rs = [resp("a", name="Acme"), resp("b", name="Globex")]
    m = one(rs)
    assert m.abstained and m.value is None and m.confidence == 0.0
    assert m.sources == ["a", "b"] and m.votes == 1


def test_abstain_below_min_agreement() -> None:
    rs = [
        resp("a", conf=0.9, name="Acme"),
        resp("b", conf=0.8, name="Globex"),
        resp("c", conf=0.7, name="Initech"),
    ]
    m = one(rs, min_agreement=2)
    assert (m.value, m.abstained, m.votes, m.sources) == (None, True, 1, ["a"])
    rs[2] = resp("c", conf=0.7, name="Globex")
    m = one(rs, min_agreement=2)
    assert (m.value, m.abstained, m.votes) == ("Globex", False, 2)


def test_two_of_three_null_wins() -> None:
    rs = [resp("a", name=None), resp("b", name="N/A"), resp("c", name="Acme")]
    m = one(rs)
    assert (m.value, m.abstained, m.votes, m.sources) == (None, False, 2, ["a", "b"])
    assert m.confidence > 0


def test_null_competes_like_any_value() -> None:
    acc = {("a", "name"): 0.9, ("b", "name"): 0.6}
    heavy_null = [resp("a", name=None), resp("b", name="Acme")]
    assert one(heavy_null, accuracy=acc).votes == 1 and one(heavy_null, accuracy=acc).value is None
    heavy_value = [resp("a", name="Acme"), resp("b", name=None)]
    assert one(heavy_value, accuracy=acc).value == "Acme"


def test_split_non_null_camp_does_not_pool_against_a_strong_null() -> None:
    rs = [resp("strong", name=None), resp("weak1", name="Globex"), resp("weak2", name="Initech")]
    m = one(rs, accuracy=STRONG)
    assert (m.value, m.abstained, m.sources) == (None, False, ["strong"])


def test_confidence_formula() -> None:
    lone = one([resp("a", conf=0.8, name="Acme")])
    assert lone.confidence == pytest.approx(0.5 * 0.8)  # share 1 × noisy-OR of one p=0.4
    three = one([resp(x, conf=1.0, name="Acme") for x in "abc"], accuracy={(x, "name"): 0.9 for x in "abc"})
    assert three.confidence == pytest.approx(1 - 0.1**3)
    split = one(
        [resp("a", conf=1.0, name="Acme"), resp("b", conf=1.0, name="Acme"), resp("c", conf=1.0, name="X")]
    )
    assert split.confidence == pytest.approx((2 / 3) * (1 - 0.5**2))


def test_zero_confidence_still_votes() -> None:
    m = one(
        [resp("a", conf=0.0, name="Acme"), resp("b", conf=0.0, name="Acme"), resp("c", conf=0.0, name="X")]
    )
    assert (m.value, m.votes) == ("Acme", 2)


# --------------------------------------------------------------------------- early quorum

F = ["name", "date"]


def both(label: str, name: object, day: object, conf: float = 0.9) -> Response:
    return resp(label, conf=conf, name=name, date=day)


def test_decided_two_of_three_agree() -> None:
    rs = [both("a", "Acme", "2025-03-14"), both("b", "ACME", "March 14, 2025")]
    assert decided(rs, 3, F, pending=["c"])
    assert decided(rs, 3, F)  # unnamed pending candidate: the best accuracy known


def test_decided_one_of_three_is_not() -> None:
    assert not decided([both("a", "Acme", "2025-03-14")], 3, F, pending=["b", "c"])


def test_decided_split_is_not() -> None:
    rs = [both("a", "Acme", "2025-03-14"), both("b", "Globex", "2025-03-14")]
    assert not decided(rs, 3, F, pending=["c"])


def test_decided_needs_every_field() -> None:
    rs = [both("a", "Acme", "2025-03-14"), both("b", "Acme", "2025-03-15")]
    assert not decided(rs, 3, F, pending=["c"])


def test_decided_when_everyone_answered_and_not_before_anyone() -> None:
    rs = [both("a", "Acme", "x"), both("b", "Globex", "y")]
    assert decided(rs, 2, F)
    assert not decided([], 3, F)


def test_decided_uses_the_max_weight_of_pending_providers() -> None:
    rs = [both("a", "Acme", "2025-03-14", conf=0.3), both("b", "Acme", "2025-03-14", conf=0.3)]
    # 2 × 0.5 × 0.3 = 0.3 < 0.5 × 1.0: a confident third answer could still win
    assert not decided(rs, 3, F, pending=["c"])
    acc = {("c", f): 0.2 for f in F}
    assert decided(rs, 3, F, pending=["c"], accuracy=acc)  # 0.3 > 0.2
    assert not decided(rs, 3, F, pending=["c"], accuracy=acc, priors={"c": 2.0})


def test_decided_respects_min_agreement() -> None:
    rs = [both("a", "Acme", "2025-03-14"), both("b", "Acme", "2025-03-14")]
    assert not decided(rs, 4, F, pending=["c", "d"], min_agreement=3)  # leader has 2 of 3 needed
    lone = [both("a", "Acme", "2025-03-14")]
    assert decided(lone, 2, F, pending=["b"], min_agreement=3)  # 3 votes unreachable: abstains anyway


def test_decided_matches_merge_for_any_late_answer() -> None:
    rs = [
        both("a", "Acme", "2025-03-14"),
        both("b", "Acme Corp", "2025-03-14"),
        both("c", "Globex", None, conf=0.2),
    ]
    assert decided(rs, 4, F, pending=["d"])
    before = merge(rs, F)
    for late in ("Globex", "Acme", None, "Acme Corporation"):
        after = merge([*rs, both("d", late, None, conf=1.0)], F)
        assert after["name"].value in ("Acme", "Acme Corp", "Acme Corporation")
        assert after["date"].value == before["date"].value


def test_accuracy_updates() -> None:
    rs = [
        resp("a#1", "openai", name="Acme", date="2025-03-14"),
        resp("b", "claude", name="Acme", date="2025-03-15"),
        ("c", "gemini", {"name": FieldValue(value="Globex", confidence=0.9)}),
    ]
    merged = merge(rs, F)
    assert merged["date"].abstained  # 1 vs 1: nothing to grade
    assert accuracy_updates(rs, merged) == [
        ("openai", "name", True),
        ("claude", "name", True),
        ("gemini", "name", False),
    ]


def test_accuracy_updates_skip_lone_winners() -> None:
    rs = [resp("a", name="Acme"), resp("b", conf=0.5, name="Globex")]
    merged = merge(rs, ["name"])
    assert merged["name"].value == "Acme"
    assert accuracy_updates(rs, merged) == []
    assert accuracy_updates(rs, merged, min_votes=1) == [("a", "name", True), ("b", "name", False)]


def test_responses_from_attempts() -> None:
    fields = {"name": FieldValue(value="Acme", confidence=0.9)}
    attempts = [
        Attempt(
            provider="openai",
            label="openai#1",
            ok=True,
            result=ProviderResult(provider="openai", model="m", fields=fields),
        ),
        Attempt(provider="claude", ok=False, error={"type": "ServerError"}),
        Attempt(
            provider="gemini", ok=True, result=ProviderResult(provider="gemini", model="m", fields=fields)
        ),
    ]
    assert responses_from_attempts(attempts) == [("openai#1", "openai", fields), ("gemini", "gemini", fields)]


# --------------------------------------------------------------------------- properties

_VALUES = st.sampled_from(
    ["Acme", "ACME Inc.", "Acme Incc", "Globex", "Initech", None, "N/A", "2025-03-14", "March 14, 2025"]
)


@st.composite
def _responses(draw: st.DrawFn) -> list[Response]:
    n = draw(st.integers(1, 6))
    out = []
    for i in range(n):
        provider = draw(st.sampled_from(["p", "q", "r"]))
        fields = {
            f: FieldValue(value=draw(_VALUES), confidence=draw(st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0])))
            for f in F
            if draw(st.booleans()) or f == "name"
        }
        out.append((f"{provider}#{i}", provider, fields))
    return out


@settings(max_examples=300, deadline=None)
@given(_responses(), st.randoms(use_true_random=False), st.integers(1, 3))
def test_merge_is_invariant_to_response_order(
    rs: list[Response], rnd: random.Random, min_agreement: int
) -> None:
    acc = {("p", "name"): 0.9, ("q", "name"): 0.6, ("p", "date"): 0.7}
    shuffled = list(rs)
    rnd.shuffle(shuffled)
    kw = {"accuracy": acc, "min_agreement": min_agreement}
    assert merge(rs, F, **kw) == merge(shuffled, F, **kw)
    assert decided(rs, len(rs) + 1, F, **kw) == decided(shuffled, len(rs) + 1, F, **kw)


@settings(max_examples=300, deadline=None)
@given(_responses(), _responses())
def test_decided_is_sound(rs: list[Response], late: list[Response]) -> None:
    """If decided says so, no later answers (at most the pending count) change a winner."""
    late = [(f"late{i}", p, f) for i, (_, p, f) in enumerate(late)]
    if not decided(rs, len(rs) + len(late), F):
        return
    before, after = merge(rs, F), merge(rs + late, F)
    for f in F:
        assert before[f].abstained == after[f].abstained
        assert set(before[f].sources) <= set(after[f].sources)
