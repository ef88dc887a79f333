"""Chord labels, min_responses and the early-quorum decision over real Attempt outcomes."""

from __future__ import annotations

import pytest

from orchestration.candidates import chord_labels
from orchestration.config import Settings
from orchestration.errors import InsufficientResponsesError, ServerError
from orchestration.extraction import (
    build_result,
    early_answer_ready,
    merge_answer,
    parse_request,
    prepare_extract,
    single_answer,
)
from orchestration.models import Attempt, Candidate, FieldValue, ParseNotes, ProviderResult, SamplingParams
from orchestration.state import FleetSetting

FIELDS = ["person_in_charge", "startup_name", "partner_org", "details", "date"]


def job(strategy="consensus", providers=("claude", "openai", "gemini"), **kw):
    request = parse_request((), {"text": "x", "strategy": strategy, "providers": list(providers), **kw})
    return prepare_extract(request, job_id="j", settings=Settings(), fleet=FleetSetting(), now=0.0)


VALUES = {"a": "Alice Kim", "b": "Robert Zhang"}


def answer(label: str, provider: str, value: str, conf: float = 0.9) -> Attempt:
    fields = {f: FieldValue(value=f"{VALUES[value]} {f}", confidence=conf) for f in FIELDS}
    result = ProviderResult(provider=provider, model="m", fields=fields)
    return Attempt(provider=provider, label=label, ok=True, result=result, latency_ms=10)


def failure(label: str, provider: str) -> Attempt:
    return Attempt(provider=provider, label=label, error=ServerError("boom", provider=provider).to_dict())


def partial(label: str, provider: str, value: str, conf: float, dropped: tuple[str, ...]) -> Attempt:
    """An answer whose ``dropped`` fields failed validation (absent, as parse_output leaves them)."""
    a = answer(label, provider, value, conf)
    assert a.result is not None
    a.result.fields = {f: v for f, v in a.result.fields.items() if f not in dropped}
    a.result.notes = ParseNotes(dropped={f: "missing" for f in dropped})
    return a


def test_chord_labels_are_unique():
    cands = [
        Candidate(provider="openai"),
        Candidate(provider="openai"),
        Candidate(provider="openai", params=SamplingParams(temperature=0.7)),
    ]
    assert chord_labels(cands) == ["openai#0", "openai#1", "openai[t=0.7]"]


def test_two_of_three_agreeing_decide_early():
    spec = job()
    assert early_answer_ready(
        spec, [answer("claude", "claude", "a"), answer("openai", "openai", "a")], accuracy={}, priors={}
    )


def test_a_split_does_not_decide_early():
    spec = job()
    assert not early_answer_ready(
        spec, [answer("claude", "claude", "a"), answer("openai", "openai", "b")], accuracy={}, priors={}
    )


def test_one_answer_in_does_not_decide_early():
    assert not early_answer_ready(job(), [answer("claude", "claude", "a")], accuracy={}, priors={})


def test_early_quorum_off_or_best_match_never_decides_early():
    two = [answer("claude", "claude", "a"), answer("openai", "openai", "a")]
    assert not early_answer_ready(job(early_quorum=False), two, accuracy={}, priors={})
    assert not early_answer_ready(job("best_match"), two, accuracy={}, priors={})


def test_min_responses_failure_lists_every_candidate():
    spec = job()
    outcomes = [answer("claude", "claude", "a"), failure("openai", "openai"), failure("gemini", "gemini")]
    with pytest.raises(InsufficientResponsesError) as info:
        merge_answer(spec, outcomes, accuracy={}, priors={})
    assert [a["error"] for a in info.value.details["attempts"]] == [None, "ServerError", "ServerError"]


def test_consensus_merges_and_best_match_chooses():
    outcomes = [
        answer("claude", "claude", "a", 0.9),
        answer("openai", "openai", "a", 0.8),
        answer("gemini", "gemini", "b", 0.95),
    ]
    fields, chosen = merge_answer(job(), outcomes, accuracy={}, priors={})
    assert chosen is None and fields["startup_name"].value == "Alice Kim startup_name"
    assert sorted(fields["startup_name"].sources) == ["claude", "openai"]
    fields, chosen = merge_answer(job("best_match"), outcomes, accuracy={}, priors={})
    assert chosen == "gemini" and fields["date"].value == "Robert Zhang date"


def test_consensus_partial_answer_votes_only_on_its_valid_fields():
    outcomes = [
        partial("claude", "claude", "a", 0.9, dropped=("startup_name",)),
        answer("openai", "openai", "a", 0.8),
        answer("gemini", "gemini", "b", 0.95),
    ]
    fields, _ = merge_answer(job(), outcomes, accuracy={}, priors={})
    # without claude's vote, gemini (0.95) outweighs openai (0.8) on the dropped field...
    assert fields["startup_name"].value == "Robert Zhang startup_name"
    assert fields["startup_name"].sources == ["gemini"]
    # ...and claude still counts everywhere else
    assert fields["date"].value == "Alice Kim date"
    assert sorted(fields["date"].sources) == ["claude", "openai"]


def test_best_match_counts_dropped_fields_as_zero():
    outcomes = [
        partial("claude", "claude", "a", 0.95, dropped=("startup_name", "date")),  # 0.95 * 3/5 = 0.57
        answer("openai", "openai", "b", 0.6),  # 0.6
    ]
    fields, chosen = merge_answer(job("best_match"), outcomes, accuracy={}, priors={})
    assert chosen == "openai"
    assert fields["date"].value == "Robert Zhang date"
    only_partial = [partial("claude", "claude", "a", 0.95, dropped=("date",))]
    fields, chosen = merge_answer(job("best_match", min_responses=1), only_partial, accuracy={}, priors={})
    assert chosen == "claude" and fields["date"].value is None and fields["details"].value


def test_failover_partial_answer_keeps_every_schema_field_in_the_result():
    spec = job("failover")
    winner = partial("claude", "claude", "a", 0.9, dropped=("date", "details"))
    result = build_result(spec, [winner], single_answer(winner), chosen="claude", now=1.0)
    assert list(result.fields) == FIELDS
    assert result.fields["date"].abstained and result.fields["date"].value is None
    assert result.fields["startup_name"].value == "Alice Kim startup_name"
    assert result.attempts[0].result is not None
    assert result.attempts[0].result.notes.dropped == {"date": "missing", "details": "missing"}
