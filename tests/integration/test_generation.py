"""``quorum.generate`` end to end: the five selectors as canvases on real workers, judge failures,
escalation, early stop, deadlines and bad input, against the emulator's generation answers."""

from __future__ import annotations

import time

import pytest
from celery.states import READY_STATES

from orchestration.errors import InsufficientResponsesError, InvalidRequestError, OrchestrationTimeoutError
from workers.job_errors import job_error

pytestmark = pytest.mark.integration

THREE = ["claude", "openai", "gemini"]
ALL = [*THREE, "local"]
CLEAN = {"defects": {"syntax": 0, "missing_requirement": 0, "refusal": 0, "empty": 0}, "judge_error_rate": 0}
PROMPT = "Write a function that adds two integers"
REQUIREMENTS = ["reject booleans explicitly", "document overflow behaviour"]


def gen(fleet, **kw):
    kw.setdefault("providers", THREE)
    kw.setdefault("use_cache", False)
    kw.setdefault("requirements", REQUIREMENTS)
    kw.setdefault("language", "python")
    return fleet.send("quorum.generate", prompt=kw.pop("prompt", PROMPT), **kw)


def clean_answers(emulator, names=ALL):
    for name in names:
        emulator.configure(name, **CLEAN)


def broken(emulator, name, defect="syntax"):
    emulator.configure(name, defects={defect: 1.0})


def by_label(result):
    return {c["label"]: c for c in result["candidates"]}


def requests(emulator, names=ALL):
    return sum(emulator.requests(n) for n in names)


def test_majority_picks_the_largest_cluster(clean, emulator):
    clean_answers(emulator)
    broken(emulator, "gemini", "refusal")
    result = gen(clean, selector="majority").get(timeout=30)
    assert result["selector"] == "majority" and result["chosen"] in ("claude", "openai")
    assert result["agreement"] == pytest.approx(2 / 3, abs=1e-3)
    cands = by_label(result)
    assert cands["gemini"]["breakdown"]["format"] == 0.0 < cands["claude"]["breakdown"]["format"]
    assert result["calls"] == 3 and result["calls_saved"] == 0
    assert result["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in result["candidates"]))


def test_quality_weighted_survives_a_failed_and_a_defective_candidate(clean, emulator):
    clean_answers(emulator)
    broken(emulator, "gemini", "missing_requirement")
    emulator.configure("openai", error_rate=1.0, errors={"server": 1})
    result = gen(clean, selector="quality_weighted").get(timeout=30)
    assert result["chosen"] == "claude" and "def solve()" in result["text"]
    cands = by_label(result)
    assert cands["openai"]["error"]["type"] == "ServerError" and cands["openai"]["score"] is None
    assert cands["gemini"]["score"] < cands["claude"]["score"] == result["score"]
    assert result["breakdown"] == cands["claude"]["breakdown"]


def test_too_few_answers_is_a_typed_error(clean, emulator):
    clean_answers(emulator, ["claude"])  # the default profile answers empty 1 % of the time
    emulator.configure("openai", error_rate=1.0, errors={"server": 1})
    emulator.set_down("gemini")
    job = gen(clean)
    with pytest.raises(InsufficientResponsesError):
        job.get(timeout=30)
    outcomes = {a["provider"]: a["error"] for a in job_error(job).attempts}
    assert outcomes == {"claude": None, "openai": "ServerError", "gemini": "OverloadedError"}


def test_hybrid_merge_makes_one_aggregator_call(clean, emulator):
    clean_answers(emulator)
    broken(emulator, "gemini", "missing_requirement")
    result = gen(clean, selector="hybrid_merge", aggregator="local", top_k=2).get(timeout=30)
    assert result["chosen"] == "aggregate" and emulator.requests("local") == 1
    assert result["merged_from"] == ["claude", "openai"]  # the top 2; gemini dropped a requirement
    assert result["calls"] == 4 and result["score"] == pytest.approx(1.0, abs=0.05)
    assert all(req in result["text"] for req in REQUIREMENTS)


def test_hybrid_merge_falls_back_when_the_aggregator_fails(clean, emulator):
    clean_answers(emulator)
    broken(emulator, "claude", "missing_requirement")
    emulator.configure("local", error_rate=1.0, errors={"server": 1})
    result = gen(clean, selector="hybrid_merge", aggregator="local").get(timeout=30)
    assert result["chosen"] == "openai"  # the quality_weighted winner
    assert "aggregator local failed (ServerError" in result["reason"]
    assert result["calls"] == 4


CANDIDATES = [
    {"provider": "claude"},
    {"provider": "openai"},
    {"provider": "gemini"},
    {"provider": "claude", "params": {"temperature": 0.5}},
    {"provider": "openai", "params": {"temperature": 0.5}},
]


def states_until_ready(job, timeout=30.0):
    """Every state the producer can see for ``job`` while it runs (polled every 10 ms). Each poll
    reads the state once: reading it and then asking ``ready()`` could miss the final state."""
    seen, deadline = set(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job.state
        seen.add(state)
        if state in READY_STATES:
            return seen
        time.sleep(0.01)
    raise TimeoutError(job.id)


def test_tournament_plays_rounds_until_one_is_left(clean, emulator):
    clean_answers(emulator)
    broken(emulator, "claude", "missing_requirement")  # both claude candidates drop one
    emulator.configure("local", latency_median_ms=150, latency_sigma=0)
    job = gen(clean, selector="tournament", candidates=CANDIDATES, judge="local")
    assert states_until_ready(job) == {"PENDING", "SUCCESS"}  # no intermediate state, ever
    result = job.get(timeout=1)
    assert result["job_id"] == job.id
    rounds = result["rounds"]
    assert [len(r["winners"]) for r in rounds] == [3, 2, 1]
    assert all(d == "judge" for r in rounds for d in r["decided_by"])
    assert result["chosen"] == rounds[-1]["winners"][0]
    assert not result["chosen"].startswith("claude")
    assert emulator.requests("local") == 4 and result["calls"] == 9  # 5 candidates + n - 1 judges


def test_failing_judge_decides_by_score_and_every_round_completes(clean, emulator):
    clean_answers(emulator)
    broken(emulator, "gemini")
    emulator.configure("local", error_rate=1.0, errors={"server": 1})
    result = gen(clean, selector="tournament", candidates=CANDIDATES, judge="local").get(timeout=30)
    rounds = result["rounds"]
    assert [len(r["winners"]) for r in rounds] == [3, 2, 1]
    for r in rounds:
        assert r["decided_by"] == ["score"] * len(r["pairs"])
        assert len(r["judge_errors"]) == len(r["pairs"])
    errors = [e["error"]["type"] for r in rounds for e in r["judge_errors"]]
    # three server errors in a row open the judge's breaker: the last pair is skipped, not sent
    assert errors[:2] == ["ServerError"] * 2 and set(errors) <= {"ServerError", "ProviderUnavailableError"}
    assert emulator.requests("local") == errors.count("ServerError")
    assert result["score"] == max(c["score"] for c in result["candidates"])
    assert result["chosen"] != "gemini"


def test_confidence_threshold_reports_no_consensus(clean, emulator):
    clean_answers(emulator)
    broken(emulator, "gemini", "refusal")
    result = gen(clean, selector="confidence_threshold", min_agreement=1.0).get(timeout=30)
    assert result["no_consensus"] and not result["escalated"]
    assert "agreement 0.667 < min_agreement 1" in result["reason"]
    assert len(result["candidates"]) == 3 and result["calls"] == 3


def test_confidence_threshold_escalates_to_a_stronger_provider(clean, emulator):
    clean_answers(emulator)
    broken(emulator, "gemini", "refusal")
    job = gen(clean, selector="confidence_threshold", min_agreement=1.0, escalate_to="local")
    result = job.get(timeout=30)
    assert result["escalated"] and not result["no_consensus"]
    assert result["chosen"] == "escalate:local" and emulator.requests("local") == 1
    assert by_label(result)["escalate:local"]["score"] == result["score"]
    assert result["calls"] == 4


def test_confidence_threshold_accepts_when_everyone_agrees(clean, emulator):
    clean_answers(emulator)
    result = gen(clean, selector="confidence_threshold", escalate_to="local").get(timeout=30)
    assert not result["no_consensus"] and not result["escalated"] and result["agreement"] == 1.0
    assert emulator.requests("local") == 0


def test_early_stop_saves_calls(clean, emulator):
    clean_answers(emulator)
    result = gen(clean, providers=ALL, quality_threshold=0.9).get(timeout=30)
    assert result["calls"] == 1 and result["calls_saved"] == 3 and result["chosen"] == "claude"
    assert requests(emulator) == 1
    assert [c["skipped"] for c in result["candidates"]] == [False, True, True, True]


def test_early_stop_goes_on_past_a_weak_answer(clean, emulator):
    clean_answers(emulator)
    broken(emulator, "claude")
    emulator.configure("openai", error_rate=1.0, errors={"server": 1})
    result = gen(clean, providers=ALL, quality_threshold=0.9, selector="majority").get(timeout=30)
    assert result["chosen"] == "gemini" and result["calls"] == 3 and result["calls_saved"] == 1
    assert requests(emulator) == 3 and emulator.requests("local") == 0


def test_deadline_bounds_every_call(clean, emulator):
    for name in THREE:
        emulator.configure(name, latency_median_ms=4000, latency_sigma=0)
    started = time.monotonic()
    with pytest.raises(OrchestrationTimeoutError):
        gen(clean, deadline_s=1.0).get(timeout=30)
    assert time.monotonic() - started < 3.5


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"scorers": {"nonexistent_scorer": 1.0}}, "unknown scorer 'nonexistent_scorer'"),
        ({"prompt": "   "}, "prompt: Value error, text is empty"),
        ({"selector": "coin_flip"}, "selector"),
        ({"judge": "nobody"}, "judge: unknown provider 'nobody'"),
        ({"temperature": 0.3}, "temperature: Extra inputs are not permitted"),
    ],
)
def test_bad_input_fails_before_any_provider_call(clean, emulator, kwargs, needle):
    with pytest.raises(InvalidRequestError) as info:
        gen(clean, **kwargs).get(timeout=30)
    assert needle in str(info.value)
    assert requests(emulator) == 0


def test_positional_arguments_are_refused(clean, emulator):
    with pytest.raises(InvalidRequestError, match="keyword arguments only"):
        clean.app.send_task("quorum.generate", args=[PROMPT]).get(timeout=30)


def test_judge_that_starts_failing_mid_tournament(clean, emulator):
    clean_answers(emulator)
    # Seeded fault draws: the judge's 1st and 2nd requests succeed, the 3rd and 4th get a 500
    # (the emulator draws in arrival order, so which round gets which outcome is fixed).
    emulator.configure("local", error_rate=0.5, errors={"server": 1}, seed=5)
    result = gen(clean, selector="tournament", candidates=CANDIDATES, judge="local").get(timeout=30)
    rounds = result["rounds"]
    assert [r["decided_by"] for r in rounds] == [["judge", "judge"], ["score"], ["score"]]
    errors = [[e["error"]["type"] for e in r["judge_errors"]] for r in rounds]
    assert errors == [[], ["ServerError"], ["ServerError"]]
    assert result["chosen"] == rounds[-1]["winners"][0] and result["calls"] == 9


def test_the_published_answer_is_cached_with_it(clean, emulator):
    """A generation job's answer goes into the cache in the round trip that publishes it: the
    same prompt again is answered from the cache, the same choice, no provider request."""
    clean_answers(emulator)
    first = gen(clean, selector="majority", use_cache=True).get(timeout=30)
    assert not first["cached"]
    before = requests(emulator)
    second = gen(clean, selector="majority", use_cache=True).get(timeout=30)
    assert second["cached"] and second["calls"] == 0 and requests(emulator) == before
    assert (second["chosen"], second["text"]) == (first["chosen"], first["text"])
