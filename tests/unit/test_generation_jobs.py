"""Generation jobs without Celery: request validation and resolution, the provider calls, the
steps between them (select, judge rounds, merge, escalation, early stop) and the result."""

from __future__ import annotations

import json

import pytest

from emulator.generation import REFUSAL, render
from emulator.prompts import parse_aggregate_prompt, parse_judge_prompt
from orchestration.config import OrchestrationConfig, Settings, default_providers
from orchestration.errors import InsufficientResponsesError, InvalidRequestError, OrchestrationTimeoutError
from orchestration.generation import (
    Done,
    FollowUp,
    GenerationSpec,
    JudgeRound,
    NextCandidate,
    Progress,
    after_call,
    after_candidate,
    after_candidates,
    after_round,
    cached_result,
    candidate_call,
    generation_invoke,
    parse_generation_request,
    prepare_generate,
)
from orchestration.models import Attempt, Candidate, ProviderResult, SamplingParams
from orchestration.prompts import AGGREGATE_SYSTEM, JUDGE_SYSTEM
from orchestration.state import FleetSetting

NOW = 1_000.0
TASK = "Write a function that adds two integers"
REQS = ["reject booleans explicitly", "document overflow behaviour"]
GOOD = render(TASK, REQS, "python")
BROKEN = GOOD.replace("def solve() -> str:", "def solve() -> str", 1)
PARTIAL = render(TASK, REQS[:1], "python")


def settings() -> Settings:
    grid = [Candidate(provider="openai", params=SamplingParams(temperature=t)) for t in (0.2, 0.9)]
    providers = default_providers()
    providers["local"] = providers["local"].model_copy(update={"enabled": True})  # judge, aggregator
    return Settings(
        providers=providers,
        orchestration=OrchestrationConfig(variations={"temps": grid}, min_responses=2),
    )


def spec(**kw) -> GenerationSpec:
    kw.setdefault("providers", ["claude", "openai", "gemini"])
    request = parse_generation_request((), {"prompt": TASK, "requirements": REQS, "language": "python", **kw})
    return prepare_generate(request, job_id="job-1", settings=settings(), fleet=FleetSetting(), now=NOW)


def ok(label: str, text: str, provider: str | None = None, cost: float = 0.001) -> Attempt:
    provider = provider or label.split("[")[0].split(":")[-1]
    result = ProviderResult(provider=provider, model="m", text=text, tokens_in=10, tokens_out=20)
    return Attempt(
        provider=provider, label=label, ok=True, result=result, tokens_in=10, tokens_out=20, cost_usd=cost
    )


def failed(label: str, kind: str = "ServerError", provider: str | None = None) -> Attempt:
    provider = provider or label.split("[")[0].split(":")[-1]
    return Attempt(provider=provider, label=label, error={"type": kind, "message": "boom"})


# --------------------------------------------------------------------------- request → spec


def test_positional_args_and_bad_kwargs_name_the_problem():
    with pytest.raises(InvalidRequestError, match="keyword arguments only"):
        parse_generation_request(("hi",), {})
    with pytest.raises(InvalidRequestError, match=r"prompt: Value error, text is empty.*top_k"):
        parse_generation_request((), {"prompt": " ", "top_k": 0})


def test_unknown_scorer_fails_at_request_time():
    with pytest.raises(InvalidRequestError, match="unknown scorer 'nope'"):
        spec(scorers={"nope": 1.0})
    assert spec(scorers={"syntax": 2.0, "format": 0.0}).scorers == {"syntax": 2.0}


def test_candidates_resolve_like_extraction():
    assert [c.provider for c in spec().candidates] == ["claude", "openai", "gemini"]
    varied = spec(providers=None, variations="temps")
    assert varied.labels() == ["openai[t=0.2]", "openai[t=0.9]"]
    with pytest.raises(InvalidRequestError, match="unknown variations 'nope'"):
        spec(providers=None, variations="nope")
    with pytest.raises(InvalidRequestError, match="unknown provider 'zzz'"):
        spec(providers=["zzz"])


def test_helpers_default_to_the_first_candidate_and_must_exist():
    s = spec()
    assert (s.judge, s.aggregator, s.escalate_to) == ("claude", "claude", None)
    assert spec(judge="gemini", aggregator="openai").judge == "gemini"
    for key in ("judge", "aggregator", "escalate_to"):
        with pytest.raises(InvalidRequestError, match=f"{key}: unknown provider 'nobody'"):
            spec(**{key: "nobody"})


def test_min_responses_defaults_and_bounds():
    assert spec().min_responses == 2
    assert spec(quality_threshold=0.9).min_responses == 1  # early stop: one good answer will do
    assert spec(quality_threshold=0.9, min_responses=2).min_responses == 2
    with pytest.raises(InvalidRequestError, match="min_responses=4 exceeds the 3 candidates"):
        spec(min_responses=4)


def test_deadline_is_absolute():
    assert spec(deadline_s=5).deadline == NOW + 5
    assert spec().deadline == NOW + Settings().orchestration.deadline_s


def test_candidate_call_carries_the_prompt_and_system():
    s = spec(system="Be terse.")
    call = candidate_call(s, 1)
    assert call.label == "openai" and call.role == "candidate"
    assert call.prompt.startswith(TASK) and "- reject booleans explicitly" in call.prompt
    assert call.system.endswith("\n\nBe terse.")

    class FakeProvider:
        def generate(self, prompt, params, *, system, timeout):
            return (prompt, params, system, timeout)

    assert generation_invoke(call)(FakeProvider(), 2.5) == (
        call.prompt,
        call.candidate.params,
        call.system,
        2.5,
    )


# --------------------------------------------------------------------------- selectors


def test_too_few_answers_is_insufficient_or_timeout():
    s = spec()
    progress = Progress(attempts=[ok("claude", GOOD), failed("openai"), failed("gemini")])
    with pytest.raises(InsufficientResponsesError) as info:
        after_candidates(s, progress, NOW)
    assert [a["error"] for a in info.value.details["attempts"]] == [None, "ServerError", "ServerError"]
    with pytest.raises(OrchestrationTimeoutError):
        after_candidates(s, progress, s.deadline + 1)


def test_majority_and_quality_weighted():
    three = [ok("claude", GOOD), ok("openai", REFUSAL), ok("gemini", GOOD)]
    maj = after_candidates(spec(selector="majority"), Progress(attempts=three), NOW)
    assert isinstance(maj, Done) and maj.result.chosen == "claude"
    assert maj.result.agreement == pytest.approx(2 / 3, abs=1e-3)
    qw = after_candidates(spec(), Progress(attempts=[ok("claude", BROKEN), *three[1:]]), NOW)
    assert isinstance(qw, Done) and qw.result.chosen == "gemini" and qw.result.text == GOOD
    scores = {c.label: c.score for c in qw.result.candidates}
    assert scores["gemini"] > scores["claude"] > scores["openai"]
    assert qw.result.calls == 3 and qw.result.cost_usd == pytest.approx(0.003)


def test_confidence_threshold_accepts_reports_or_escalates():
    three = [ok("claude", GOOD), ok("openai", GOOD), ok("gemini", REFUSAL)]
    accept = after_candidates(spec(selector="confidence_threshold"), Progress(attempts=three), NOW)
    assert isinstance(accept, Done) and not accept.result.no_consensus
    strict = spec(selector="confidence_threshold", min_agreement=1.0)
    low = after_candidates(strict, Progress(attempts=three), NOW)
    assert isinstance(low, Done) and low.result.no_consensus and low.result.text == GOOD
    assert "agreement 0.667 < min_agreement 1" in (low.result.reason or "")
    esc_spec = spec(selector="confidence_threshold", min_agreement=1.0, escalate_to="local")
    progress = Progress(attempts=three)
    step = after_candidates(esc_spec, progress, NOW)
    assert (
        isinstance(step, FollowUp)
        and step.call.label == "escalate:local"
        and step.call.prompt.startswith(TASK)
    )
    done = after_call(esc_spec, progress.model_copy(deep=True), ok("escalate:local", GOOD, "local"), NOW)
    assert done.result.escalated and done.result.chosen == "escalate:local" and done.result.calls == 4
    assert done.result.candidates[-1].label == "escalate:local" and done.result.candidates[-1].score
    fail = after_call(
        esc_spec, progress.model_copy(deep=True), failed("escalate:local", provider="local"), NOW
    )
    assert fail.result.no_consensus and not fail.result.escalated
    assert "escalation to local failed (ServerError: boom)" in (fail.result.reason or "")


def test_hybrid_merge_asks_one_aggregator_and_falls_back():
    s = spec(selector="hybrid_merge", top_k=2, aggregator="local")
    progress = Progress(attempts=[ok("claude", PARTIAL), ok("openai", GOOD), ok("gemini", BROKEN)])
    step = after_candidates(s, progress, NOW)
    assert isinstance(step, FollowUp) and step.call.system == AGGREGATE_SYSTEM
    parsed = parse_aggregate_prompt(step.call.prompt)
    assert parsed is not None and parsed[1][0] == GOOD and len(parsed[1]) == 2
    merged = after_call(s, progress.model_copy(deep=True), ok("aggregate:local", GOOD, "local"), NOW)
    assert merged.result.chosen == "aggregate" and merged.result.text == GOOD
    assert merged.result.merged_from[0] == "openai" and merged.result.calls == 4
    empty = after_call(s, progress.model_copy(deep=True), ok("aggregate:local", " ", "local"), NOW)
    assert empty.result.chosen == "openai" and "aggregator local returned an empty answer" in (
        empty.result.reason or ""
    )


def test_tournament_rounds_and_a_failed_judge():
    s = spec(selector="tournament", judge="local")
    progress = Progress(attempts=[ok("claude", PARTIAL), ok("openai", GOOD), ok("gemini", BROKEN)])
    step = after_candidates(s, progress, NOW)
    assert isinstance(step, JudgeRound) and len(step.calls) == 1 and progress.bye == "openai"
    call = step.calls[0]
    assert call.system == JUDGE_SYSTEM and call.candidate.provider == "local"
    assert parse_judge_prompt(call.prompt) is not None
    _, b = progress.pairs[0]
    verdict = ok(call.label, json.dumps({"winner": "B"}), "local")
    step = after_round(s, progress, [verdict], NOW)
    assert isinstance(step, JudgeRound) and progress.rounds[0].winners == [b, "openai"]
    last = after_round(s, progress, [failed(step.calls[0].label, provider="local")], NOW)
    assert isinstance(last, Done) and last.result.chosen == "openai"  # decided by score
    final = last.result.rounds[-1]
    assert final.decided_by == ["score"] and final.judge_errors[0].error["type"] == "ServerError"
    assert last.result.calls == 5


def test_early_stop_stops_once_an_answer_is_good_enough():
    s = spec(quality_threshold=0.9, providers=["claude", "openai", "gemini", "local"])
    progress = Progress()
    assert after_candidate(s, progress, ok("claude", BROKEN), NOW) == NextCandidate(1)
    assert after_candidate(s, progress, failed("openai"), NOW) == NextCandidate(2)
    done = after_candidate(s, progress, ok("gemini", GOOD), NOW)
    assert isinstance(done, Done) and done.result.chosen == "gemini"
    assert done.result.calls == 3 and done.result.calls_saved == 1
    assert [c.skipped for c in done.result.candidates] == [False, False, False, True]


def test_early_stop_without_time_left_selects_what_it_has():
    s = spec(quality_threshold=0.99, providers=["claude", "openai", "gemini"])
    done = after_candidate(s, Progress(), ok("claude", BROKEN), s.deadline + 1)
    assert isinstance(done, Done) and done.result.chosen == "claude" and done.result.calls_saved == 0


def test_cached_result_costs_nothing():
    s = spec()
    done = after_candidates(s, Progress(attempts=[ok("claude", GOOD), ok("openai", GOOD)]), NOW)
    assert isinstance(done, Done)
    hit = cached_result(done.result.model_dump(mode="json"), s.model_copy(update={"job_id": "job-2"}))
    assert hit["cached"] and hit["job_id"] == "job-2" and hit["text"] == GOOD
    assert hit["calls"] == hit["cost_usd"] == 0 and hit["candidates"] == []
