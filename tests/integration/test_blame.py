"""On real workers: what a producer's request or a weak model's answers do to the fleet.
Jobs whose answers never fit their schema, or whose schema cannot be applied, open no breaker
and leave provider health clean; their billed tokens are counted; every job, failed chords
included, counts once in ``quorum status``."""

from __future__ import annotations

import time

import pytest

from orchestration.breaker import RedisBreaker
from orchestration.data import load_emails
from orchestration.errors import (
    AllProvidersFailedError,
    InsufficientResponsesError,
    InvalidRequestError,
    QuorumError,
)
from orchestration.state.costs import totals
from orchestration.status import fleet_status

pytestmark = pytest.mark.integration

EMAIL = load_emails()[0]
THREE = ["claude", "openai", "gemini"]
#: The test fleet opens a breaker after 3 consecutive failures: every batch below is larger.
BATCH = 8


def extract(fleet, **kw):
    kw.setdefault("text", EMAIL.text)
    kw.setdefault("strategy", "failover")
    kw.setdefault("providers", THREE)
    kw.setdefault("use_cache", False)
    return fleet.send(**kw)


def breaker_states(fleet) -> dict[str, str]:
    breaker = RedisBreaker(fleet.redis, fleet.settings.key_prefix, fleet.settings.breaker)
    return {p: s.state.value for p, s in breaker.states(THREE, time.time()).items()}


def test_answers_that_never_fit_open_no_breaker_but_are_counted(clean, emulator):
    for name in THREE:
        emulator.configure(name, error_rate=1.0, errors={"malformed": 1})
    jobs = [extract(clean) for _ in range(BATCH)]
    for job in jobs:
        with pytest.raises(AllProvidersFailedError):
            job.get(timeout=30)
    assert breaker_states(clean) == dict.fromkeys(THREE, "closed")
    report = fleet_status(clean.redis, clean.settings, time.time(), detailed=True)
    rows = {p.provider: p for p in report.providers}
    spend = totals(clean.redis, clean.settings.key_prefix, THREE)
    for name in THREE:
        assert rows[name].healthy and rows[name].errors == {}
        assert rows[name].invalid_outputs == BATCH and rows[name].invalid_rate == 1.0
        assert spend[name].calls == BATCH and spend[name].tokens_in > 0  # billed, so counted
    assert report.jobs == BATCH and report.cost_usd > 0  # failed jobs count, with their cost
    assert report.avg_cost_per_job_usd == pytest.approx(report.cost_usd / BATCH)

    emulator.reset()
    result = extract(clean).get(timeout=30)  # the next ordinary job is served as usual
    assert result["chosen"] == "claude"


def test_a_schema_that_cannot_be_applied_blames_nobody(clean, emulator):
    schema = {"type": "object", "properties": {"name": {"$ref": "#/$defs/nowhere"}}}
    jobs = [extract(clean, json_schema=schema) for _ in range(BATCH)]
    for job in jobs:
        with pytest.raises(QuorumError):
            job.get(timeout=30)
    assert breaker_states(clean) == dict.fromkeys(THREE, "closed")
    report = fleet_status(clean.redis, clean.settings, time.time())
    for row in report.providers:
        assert row.healthy and row.errors == {} and row.invalid_outputs == 0, row
    assert extract(clean).get(timeout=30)["chosen"] == "claude"


def test_a_failed_consensus_job_counts_in_status(clean, emulator):
    answered = extract(clean, strategy="consensus").get(timeout=30)
    emulator.set_down("openai")
    emulator.set_down("gemini")
    with pytest.raises(InsufficientResponsesError):
        extract(clean, strategy="consensus").get(timeout=30)
    report = fleet_status(clean.redis, clean.settings, time.time(), detailed=True)
    assert report.jobs == 2
    ledger = sum(t.micro_usd for t in totals(clean.redis, clean.settings.key_prefix, THREE).values())
    assert report.cost_usd == pytest.approx(ledger / 1e6)  # both jobs' calls, nothing twice
    assert report.cost_usd > answered["cost_usd"]  # the failed job's answered call cost too
    assert report.avg_cost_per_job_usd == pytest.approx(report.cost_usd / 2)


def test_a_producer_gets_the_message_and_reads_the_error_payload(clean):
    job = extract(clean, providers=["nope"])
    with pytest.raises(InvalidRequestError) as info:
        job.get(timeout=30)
    assert str(info.value) == info.value.args[0] and "nope" in str(info.value)
    payload = clean.app.AsyncResult(f"{job.id}:error").result  # what a plain Celery producer reads
    assert payload["type"] == "InvalidRequestError" and payload["field"] == "providers"
    assert payload["message"] == str(info.value)


def test_generation_jobs_count_once_answered_or_failed(clean, emulator):
    prompt = "Write a Python function add(a, b) that returns a + b."
    kw = {"prompt": prompt, "providers": THREE, "use_cache": False, "language": "python"}
    answered = clean.send("quorum.generate", **kw).get(timeout=60)
    emulator.set_down("openai")
    emulator.set_down("gemini")
    with pytest.raises(InsufficientResponsesError):
        clean.send("quorum.generate", **kw).get(timeout=60)
    report = fleet_status(clean.redis, clean.settings, time.time(), detailed=True)
    assert report.jobs == 2 and report.cost_usd > answered["cost_usd"] > 0
