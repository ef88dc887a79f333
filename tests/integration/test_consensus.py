"""Consensus and best-match as chords: partial failures, open breakers, the cache, early quorum."""

from __future__ import annotations

import json
import time

import pytest

from orchestration.breaker import RedisBreaker
from orchestration.data import load_emails
from orchestration.errors import InsufficientResponsesError
from orchestration.state.accuracy import read_counts
from orchestration.state.job_records import published_by
from workers.job_errors import job_error

pytestmark = pytest.mark.integration

EMAILS = load_emails()
THREE = sorted(["claude", "openai", "gemini"])
QUIET = {"noise": {"wrong": 0, "near_miss": 0, "drop": 0, "swap": 0}}


def chord_job(fleet, strategy="consensus", email=EMAILS[1], **kw):
    kw.setdefault("providers", THREE)
    kw.setdefault("use_cache", False)
    return fleet.send(text=email.text, strategy=strategy, **kw)


def quiet(emulator):
    for name in THREE:
        emulator.configure(name, **QUIET)


def test_consensus_merges_three_answers_field_by_field(clean, emulator):
    quiet(emulator)
    result = chord_job(clean, early_quorum=False).get(timeout=30)
    assert result["strategy"] == "consensus" and not result["early"]
    assert sorted(a["provider"] for a in result["attempts"]) == THREE
    labels = EMAILS[1].labels
    for name, field in result["fields"].items():
        if labels[name] is not None:
            assert field["votes"] == 3 and field["agreement"] == 1.0
            assert sorted(field["sources"]) == THREE
    assert result["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in result["attempts"]))


def test_chord_calls_leave_no_result_of_their_own(clean, emulator):
    """A chord call's outcome reaches the merge through the chord's results only: no
    ``celery-task-meta-<job>.c<i>`` (nobody read them; each was a write and a key for a day)."""
    quiet(emulator)
    job = chord_job(clean, early_quorum=False)
    result = job.get(timeout=30)
    assert sorted(a["provider"] for a in result["attempts"]) == THREE
    assert clean.redis.exists(f"celery-task-meta-{job.id}")
    assert sorted(clean.redis.scan_iter(f"celery-task-meta-{job.id}.*")) == []


def test_one_of_three_failing_still_merges(clean, emulator):
    quiet(emulator)
    emulator.configure("gemini", error_rate=1.0, errors={"server": 1})
    result = chord_job(clean, early_quorum=False).get(timeout=30)
    failed = [a for a in result["attempts"] if not a["ok"]]
    assert [a["provider"] for a in failed] == ["gemini"]
    assert failed[0]["error"]["type"] == "ServerError"
    assert all(f["votes"] <= 2 for f in result["fields"].values())


def test_two_of_three_failing_is_a_typed_error_listing_each_candidate(clean, emulator):
    emulator.configure("gemini", error_rate=1.0, errors={"server": 1})
    emulator.set_down("openai")
    job = chord_job(clean)
    with pytest.raises(InsufficientResponsesError):
        job.get(timeout=30)
    outcomes = {a["provider"]: a["error"] for a in job_error(job).attempts}
    assert outcomes == {"claude": None, "openai": "OverloadedError", "gemini": "ServerError"}


def test_open_breaker_removes_the_candidate_before_it_is_sent(clean, emulator):
    RedisBreaker(clean.redis, clean.settings.key_prefix, clean.settings.breaker).force_open(
        "gemini", time.time(), 60
    )
    result = chord_job(clean).get(timeout=30)
    assert emulator.requests("gemini") == 0
    gemini = next(a for a in result["attempts"] if a["provider"] == "gemini")
    assert gemini["skipped"] and gemini["error"]["type"] == "ProviderUnavailableError"


def test_best_match_picks_one_candidate(clean, emulator):
    quiet(emulator)
    result = chord_job(clean, "best_match").get(timeout=30)
    assert result["strategy"] == "best_match" and result["chosen"] in THREE
    for field in result["fields"].values():
        assert field["sources"][0] == result["chosen"]


def test_cache_hit_makes_no_provider_request(clean, emulator):
    first = chord_job(clean, use_cache=True, email=EMAILS[2]).get(timeout=30)
    before = {p: emulator.requests(p) for p in THREE}
    # the same email with other spacing, same strategy and candidates
    again = clean.send(text="  " + EMAILS[2].text.replace(" ", "  "), strategy="consensus", providers=THREE)
    second = again.get(timeout=30)
    assert {p: emulator.requests(p) for p in THREE} == before
    assert second["cached"] and second["cost_usd"] == 0 and second["attempts"] == []
    assert {k: v["value"] for k, v in second["fields"].items()} == {
        k: v["value"] for k, v in first["fields"].items()
    }
    bypass = chord_job(clean, use_cache=False, email=EMAILS[2]).get(timeout=30)
    assert not bypass["cached"] and sum(emulator.requests(p) for p in THREE) > sum(before.values())


@pytest.mark.parametrize(
    ("strategy", "early_quorum", "publisher"),
    [
        ("failover", True, "call"),
        ("consensus", True, "early"),
        ("consensus", False, "body"),
        ("best_match", True, "body"),
    ],
)
def test_each_publisher_caches_the_answer_it_publishes(clean, emulator, strategy, early_quorum, publisher):
    """The cache entry rides with the answer in its publisher's round trip: whichever task
    publishes (the failover call, the early-quorum call, the chord body), the same job sent
    again is answered from the cache with the published fields and no provider request."""
    quiet(emulator)
    if publisher == "early":
        # With three equally fast providers the second answer's early check and the chord body
        # (sent when the third lands) race to publish; a slow third leaves the early check alone.
        emulator.configure("gemini", latency_median_ms=1500, latency_sigma=0)
    email = EMAILS[4]
    first_job = chord_job(clean, strategy, email=email, use_cache=True, early_quorum=early_quorum)
    first = first_job.get(timeout=30)
    assert not first["cached"]
    assert published_by(clean.redis, clean.settings.key_prefix, first_job.id).split(":")[0] == publisher
    if publisher == "early":  # its chord body, run after the answer, ends before the count
        assert all(total == 1 for _, total in _graded_once(clean, sorted(email.labels)).values())
    before = {p: emulator.requests(p) for p in THREE}
    second = chord_job(clean, strategy, email=email, use_cache=True, early_quorum=early_quorum).get(
        timeout=30
    )
    assert second["cached"] and second["attempts"] == []
    assert {p: emulator.requests(p) for p in THREE} == before
    assert second["fields"] == first["fields"]


def test_a_job_answered_early_still_grades_every_provider_once(clean, emulator):
    """The chord body grades with all three answers (in the round trip that tries its guard),
    even though the job was answered after two: each provider's field counts go up by one."""
    quiet(emulator)
    emulator.configure("gemini", latency_median_ms=1500, latency_sigma=0)  # answered after two
    fields = sorted(EMAILS[5].labels)
    job = chord_job(clean, email=EMAILS[5])
    assert job.get(timeout=30)["early"]
    counts = _graded_once(clean, fields)
    assert {key: total for key, (_, total) in counts.items()} == {(p, f): 1 for p in THREE for f in fields}
    time.sleep(0.5)
    assert read_counts(clean.redis, clean.settings.key_prefix, THREE, fields) == counts  # graded once


def _graded_once(fleet, fields, timeout_s: float = 15.0):
    """The three providers' accuracy counts once each field of each has been graded once: the
    chord body grades in the round trip that tries its guard, so after this it writes nothing."""
    until = time.monotonic() + timeout_s
    while True:
        counts = read_counts(fleet.redis, fleet.settings.key_prefix, THREE, fields)
        if all(total == 1 for _, total in counts.values()) or time.monotonic() > until:
            return counts
        time.sleep(0.05)


def test_early_quorum_answers_before_the_slow_third_provider(clean, emulator):
    quiet(emulator)
    emulator.configure("gemini", latency_median_ms=8000, latency_sigma=0)
    result = chord_job(clean, email=EMAILS[3]).get(timeout=30)
    assert result["early"]
    assert sorted(a["provider"] for a in result["attempts"]) == ["claude", "openai"]
    assert emulator.stats()["gemini"]["in_flight"] == 1  # still running when the answer came


def test_a_late_call_of_a_job_answered_early_keeps_its_outcome_as_long_as_the_answer(clean, emulator):
    """The answer lists the calls it was built from; the late call's outcome (its tokens and
    cost, for an operator reconciling the ledger) stays in the job's answers list, kept as long
    as results are (no call stores a result of its own)."""
    quiet(emulator)
    emulator.configure("gemini", latency_median_ms=1500, latency_sigma=0)
    job = chord_job(clean, email=EMAILS[3])
    assert job.get(timeout=30)["early"]
    key = f"{clean.settings.key_prefix}job:{{{job.id}}}:answers"
    until = time.monotonic() + 20
    while clean.redis.llen(key) < 3 and time.monotonic() < until:
        time.sleep(0.05)
    late = [json.loads(raw) for raw in clean.redis.lrange(key, 0, -1)]
    gemini = [a for a in late if a["provider"] == "gemini"]
    assert len(gemini) == 1 and gemini[0]["ok"] and gemini[0]["task_id"].startswith(f"{job.id}.c")
    assert clean.redis.ttl(key) > 3600  # the results' expiry (a day by default), not an hour
