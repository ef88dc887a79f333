"""Generation selectors (majority, quality, top-K, tournament, confidence threshold, early
stop) and the generation request/result models."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from orchestration.errors import InsufficientResponsesError, ProviderTimeoutError
from orchestration.generation import GenerationRequest, GenerationResult, ScoreCard, TournamentRound
from orchestration.generation.selectors import (
    apply_judgements,
    calls_saved,
    cluster,
    decide_confidence_threshold,
    pair_round,
    parse_verdict,
    run_tournament,
    select_majority,
    select_quality_weighted,
    should_stop,
    top_k,
    tournament_calls,
    tournament_winner,
)
from orchestration.models import Attempt, ProviderResult


def cards(**scores: float) -> dict[str, ScoreCard]:
    return {label: ScoreCard(total, {"q": total}) for label, total in scores.items()}


# --------------------------------------------------------------------------- majority


def test_majority_largest_cluster_wins_with_best_scored_representative():
    texts = {
        "a": "The capital of France is Paris.",
        "b": "Paris is a city in Texas, USA, population about 25,000.",
        "c": "the capital of france is paris",
        "d": "The capital of France is  Paris!",
    }
    result = select_majority(texts, 0.85, scores={"a": 0.5, "c": 0.6, "d": 0.9, "b": 1.0})
    assert result.cluster == ("a", "c", "d")
    assert result.winner == "d"
    assert result.agreement == pytest.approx(0.75)
    assert result.share_of("b") == pytest.approx(0.25)
    assert result.share_of("zzz") == 0.0


def test_majority_representative_without_scores_is_first_member():
    texts = {"x": "alpha beta", "y": "completely different", "z": "Alpha  Beta"}
    assert select_majority(texts, 0.9).winner == "x"


def test_majority_fences_and_whitespace_do_not_split_code():
    texts = {"a": "```python\nx = 1\n```", "b": "x  =  1", "c": "print('no')"}
    result = select_majority(texts, 0.95, language="python")
    assert result.cluster == ("a", "b")


def test_majority_tie_on_size_goes_to_higher_mean_score_then_earlier():
    texts = {"a": "red apples", "b": "blue ocean waves", "c": "red apples!", "d": "blue ocean waves."}
    tied = select_majority(texts, 0.9)
    assert tied.cluster == ("a", "c")  # same size, no scores → earlier cluster
    by_score = select_majority(texts, 0.9, scores={"a": 0.2, "c": 0.2, "b": 0.9, "d": 0.1})
    assert by_score.cluster == ("b", "d") and by_score.winner == "b"


def test_majority_all_different_picks_first_or_best():
    texts = {"a": "one thing", "b": "zzzzzzzzzzzz", "c": "qqqq rrrr"}
    assert select_majority(texts).winner == "a"
    assert select_majority(texts, scores={"a": 0.1, "b": 0.2, "c": 0.9}).winner == "c"
    assert select_majority(texts).agreement == pytest.approx(1 / 3)


def test_cluster_joins_the_most_similar_leader_deterministically():
    texts = {"a": "abcdefghij", "b": "abcdefghXY", "c": "abcdefghiX"}
    # b and c are each ≥ 0.8 similar to the leader a, so all three share a's cluster
    assert cluster(texts, 0.8) == [["a", "b", "c"]]
    assert cluster(dict(reversed(texts.items())), 0.8) == [["c", "b", "a"]]


def test_majority_rejects_nothing_and_bad_threshold():
    with pytest.raises(InsufficientResponsesError):
        select_majority({})
    with pytest.raises(ValueError, match="threshold"):
        select_majority({"a": "x"}, 0.0)


# --------------------------------------------------------------------------- quality / top-K


def test_quality_weighted_best_and_ties():
    assert select_quality_weighted(cards(a=0.4, b=0.9, c=0.7)) == "b"
    assert select_quality_weighted(cards(b=0.8, a=0.8, c=0.1)) == "b"  # earlier in job order
    with pytest.raises(InsufficientResponsesError):
        select_quality_weighted({})


def test_top_k():
    cs = cards(a=0.4, b=0.9, c=0.7, d=0.9)
    assert top_k(cs, 3) == ["b", "d", "c"]
    assert top_k(cs, 10) == ["b", "d", "c", "a"]
    assert top_k(cs, 1) == ["b"]
    with pytest.raises(ValueError):
        top_k(cs, 0)


# --------------------------------------------------------------------------- tournament


SCORES = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "e": 0.5}


def test_pair_round_even_best_vs_worst():
    pairs, bye = pair_round(["d", "a", "c", "b"], SCORES)
    assert pairs == [("a", "d"), ("b", "c")]
    assert bye is None


def test_pair_round_odd_count_gives_top_seed_a_bye():
    pairs, bye = pair_round(list("abcde"), SCORES)
    assert bye == "a"
    assert pairs == [("b", "e"), ("c", "d")]
    assert pair_round(["x"]) == ([], "x")
    assert pair_round(["x", "y", "z"]) == ([("y", "z")], "x")  # no scores: given order seeds


def test_pair_round_rejects_duplicates_and_nothing():
    with pytest.raises(ValueError, match="duplicate"):
        pair_round(["a", "a"])
    with pytest.raises(InsufficientResponsesError):
        pair_round([])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"winner": "A", "reason": "complete"}', "A"),
        ('{"winner": "b"}', "B"),
        ('```json\n{"winner": "B", "reason": "x"}\n```', "B"),
        ('Here is my verdict: {"winner": "A"} thanks', "A"),
        ('{"Winner": "Candidate B"}', "B"),
        ('{"verdict": {"winner": "A"}, "scores": {"a": 9}}', "A"),
        ('{"scores": {"a": 1}, "winner": "B"}', "B"),
        ('"B" is better', None),
        ("A", "A"),
        (" b. ", "B"),
        ("**A**", "A"),
        ('"B"', "B"),
        ("winner: A", "A"),
        ('{"winner": "C"}', None),
        ('{"reason": "both fine"}', None),
        ("A is better than B", None),
        ("", None),
        ("tie", None),
    ],
)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_apply_judgements_with_a_failed_judge_mid_round():
    pairs = [("a", "f"), ("b", "e"), ("c", "d")]
    scores = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.75, "e": 0.5, "f": 0.1}
    verdicts = [
        '{"winner": "B"}',  # judge prefers f over a
        ProviderTimeoutError("judge timed out", provider="openai"),  # failed mid-round
        "no idea",  # unparseable
    ]
    rnd = apply_judgements(pairs, verdicts, scores, index=2, bye="g")
    assert rnd.winners == ["f", "b", "d", "g"]
    assert rnd.decided_by == ["judge", "score", "score"]
    assert rnd.index == 2 and rnd.bye == "g"
    [timeout, nonsense] = rnd.judge_errors
    assert (timeout.a, timeout.b, timeout.winner) == ("b", "e", "b")
    assert timeout.error["type"] == "ProviderTimeoutError" and timeout.error["provider"] == "openai"
    assert nonsense.winner == "d" and nonsense.error["type"] == "InvalidOutputError"
    assert TournamentRound.model_validate(json.loads(rnd.model_dump_json())) == rnd


def test_apply_judgements_accepts_attempts_and_error_dicts():
    ok = Attempt(provider="judge", ok=True, result=ProviderResult(provider="judge", model="m", text="B"))
    failed = Attempt(provider="judge", error={"type": "ServerError", "message": "500"})
    rnd = apply_judgements(
        [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")],
        [ok, failed, {"type": "RateLimitedError", "message": "429"}, None],
        {"a": 1, "b": 0, "c": 0.5, "d": 0.5, "e": 0, "f": 1, "g": 0, "h": 0},
    )
    assert rnd.winners == ["b", "c", "f", "g"]  # tie on score → a (the higher seed)
    assert [f.error["type"] for f in rnd.judge_errors] == ["ServerError", "RateLimitedError", "QuorumError"]
    with pytest.raises(ValueError):
        apply_judgements([("a", "b")], [], {})


def test_run_tournament_odd_count_with_bye():
    calls = []

    def judge(a: str, b: str) -> str:
        calls.append((a, b))
        return '{"winner": "B"}' if "e" in (a, b) else "A"  # e wins whenever it plays

    winner, rounds = run_tournament(list("abcde"), SCORES, judge)
    assert len(calls) == tournament_calls(5) == 4
    # every round is re-seeded by score, so the top seed takes the bye whenever the count is odd
    assert [r.bye for r in rounds] == ["a", "a", None]
    assert rounds[0].pairs == [("b", "e"), ("c", "d")]
    assert rounds[0].winners == ["e", "c", "a"]
    assert rounds[1].pairs == [("c", "e")]
    assert rounds[2].pairs == [("a", "e")]
    assert winner == "e" == tournament_winner(rounds)
    assert all(not r.judge_errors for r in rounds)


def test_run_tournament_round_completes_when_a_judge_call_raises():
    def judge(a: str, b: str) -> str:
        if (a, b) == ("b", "c"):
            raise ProviderTimeoutError("judge hung")
        return "A"

    winner, rounds = run_tournament(["a", "b", "c", "d"], {"a": 0.9, "b": 0.8, "c": 0.85, "d": 0.1}, judge)
    first = rounds[0]
    assert first.pairs == [("a", "d"), ("c", "b")]
    assert first.winners == ["a", "c"]
    assert first.decided_by == ["judge", "judge"]
    # now make the failing pair appear: b vs c with b seeded higher
    winner, rounds = run_tournament(["a", "b", "c", "d"], {"a": 0.9, "b": 0.85, "c": 0.8, "d": 0.1}, judge)
    assert rounds[0].winners == ["a", "b"]  # the failed pair went to b on score
    assert rounds[0].decided_by == ["judge", "score"]
    assert rounds[0].judge_errors[0].error["message"] == "judge hung"
    assert winner == "a" and len(rounds) == 2


def test_tournament_single_candidate_and_winner_helper():
    assert run_tournament(["solo"], {}, lambda a, b: "A") == ("solo", [])
    assert tournament_winner([]) is None


# --------------------------------------------------------------------------- confidence threshold


def test_confidence_threshold_accept():
    d = decide_confidence_threshold(cards(a=0.6, b=0.85), 0.75, 0.7, 0.5, escalate_to="claude")
    assert (d.action, d.chosen, d.score) == ("accept", "b", 0.85)


def test_confidence_threshold_escalates_once():
    d = decide_confidence_threshold(cards(a=0.6, b=0.65), 0.75, 0.7, 0.5, escalate_to="claude")
    assert d.action == "escalate" and d.chosen == "b"
    assert "score 0.650 < min_score 0.7" in d.reason and "claude" in d.reason
    again = decide_confidence_threshold(
        cards(a=0.6, b=0.65), 0.75, 0.7, 0.5, escalate_to="claude", escalated=True
    )
    assert again.action == "no_consensus" and again.chosen == "b"


def test_confidence_threshold_no_consensus_on_low_agreement():
    d = decide_confidence_threshold(cards(a=0.9, b=0.8), 0.34, 0.7, 0.5)
    assert d.action == "no_consensus" and d.chosen == "a"
    assert "agreement 0.340 < min_agreement 0.5" in d.reason


def test_confidence_threshold_without_answers():
    assert decide_confidence_threshold({}, 0.0, 0.7, 0.5).action == "no_consensus"
    d = decide_confidence_threshold({}, 0.0, 0.7, 0.5, escalate_to="claude")
    assert d.action == "escalate" and d.chosen is None


# --------------------------------------------------------------------------- early stop


def test_should_stop_and_calls_saved():
    assert not should_stop([0.5, 0.7], None)
    assert not should_stop([0.5, None, 0.79], 0.8)
    assert should_stop([0.5, 0.8], 0.8)
    assert not should_stop([], 0.0)
    assert calls_saved(5, 2) == 3
    assert calls_saved(3, 3) == 0
    assert calls_saved(2, 4) == 0


# --------------------------------------------------------------------------- models


def test_generation_request_defaults_and_normalisation():
    req = GenerationRequest(prompt="Write add()", language=" Python ", system="  ", requirements=[" a "])
    assert req.selector == "quality_weighted" and req.top_k == 3 and req.use_cache
    assert req.language == "python" and req.system is None and req.requirements == ["a"]
    assert GenerationRequest.model_validate(json.loads(req.model_dump_json())) == req


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt": "  "},
        {"prompt": "x" * 50_001},
        {"prompt": "bad \ud800 surrogate"},
        {"prompt": "ok", "requirements": [""]},
        {"prompt": "ok", "requirements": ["r"] * 51},
        {"prompt": "ok", "requirements": ["r" * 501]},
        {"prompt": "ok", "selector": "vote"},
        {"prompt": "ok", "scorers": {}},
        {"prompt": "ok", "scorers": {"syntax": -1}},
        {"prompt": "ok", "scorers": {"syntax": 0}},
        {"prompt": "ok", "quality_threshold": 1.5},
        {"prompt": "ok", "language": "py thon"},
        {"prompt": "ok", "providers": []},
        {"prompt": "ok", "surprise": 1},
    ],
)
def test_generation_request_rejects(kwargs):
    with pytest.raises(ValidationError):
        GenerationRequest(**kwargs)


def test_generation_result_round_trips():
    result = GenerationResult(
        job_id="j",
        selector="tournament",
        text="x",
        chosen="a",
        rounds=[TournamentRound(index=0, pairs=[("a", "b")], winners=["a"], decided_by=["judge"])],
    )
    dumped = json.loads(result.model_dump_json())
    assert dumped["kind"] == "generate" and dumped["rounds"][0]["pairs"] == [["a", "b"]]
    assert GenerationResult.model_validate(dumped) == result
