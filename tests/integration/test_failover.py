"""Failover across providers, driven by errbacks, with a breaker shared in Redis."""

from __future__ import annotations

import time

import pytest
from celery.exceptions import TimeoutError as CeleryTimeout

from orchestration.data import load_emails
from orchestration.errors import AllProvidersFailedError, InvalidRequestError, NoHealthyProvidersError
from workers.job_errors import job_error

pytestmark = pytest.mark.integration

EMAIL = load_emails()[0]
ORDER = ["claude", "openai", "gemini"]


def extract(fleet, **kw):
    kw.setdefault("text", EMAIL.text)
    kw.setdefault("strategy", "failover")
    kw.setdefault("providers", ORDER)
    kw.setdefault("use_cache", False)
    return fleet.send(**kw)


def test_primary_up_answers_from_primary(clean, emulator):
    result = extract(clean).get(timeout=30)
    assert result["chosen"] == "claude"
    assert [a["provider"] for a in result["attempts"]] == ["claude"]
    assert set(result["fields"]) == {"person_in_charge", "startup_name", "partner_org", "details", "date"}
    assert result["cost_usd"] > 0 and result["tokens_in"] > 0
    assert emulator.requests("claude") == 1 and emulator.requests("openai") == 0


def test_primary_down_answers_from_secondary(clean, emulator):
    emulator.set_down("claude")
    result = extract(clean).get(timeout=30)
    assert result["chosen"] == "openai"
    first, second = result["attempts"]
    assert first["provider"] == "claude" and not first["ok"]
    assert first["error"]["type"] == "OverloadedError"
    assert second["provider"] == "openai" and second["ok"]


def test_all_down_raises_all_providers_failed_with_every_attempt(clean, emulator):
    for name in ORDER:
        emulator.set_down(name)
    job = extract(clean)
    with pytest.raises(AllProvidersFailedError):
        job.get(timeout=30)
    attempts = job_error(job).attempts
    assert [a["provider"] for a in attempts] == ORDER
    assert all(a["error"] == "OverloadedError" and a["latency_ms"] > 0 for a in attempts)


def test_open_breaker_is_skipped_without_a_request(clean, emulator):
    emulator.set_down("claude")
    for _ in range(3):  # consecutive_failures = 3 in the test config
        extract(clean).get(timeout=30)
    before = emulator.requests("claude")
    result = extract(clean).get(timeout=30)
    assert result["chosen"] == "openai"
    assert emulator.requests("claude") == before
    skipped = result["attempts"][0]
    assert skipped["skipped"] and skipped["error"]["type"] == "ProviderUnavailableError"


def test_after_cooldown_one_probe_closes_the_breaker(clean, emulator):
    emulator.set_down("claude")
    for _ in range(3):
        extract(clean).get(timeout=30)
    emulator.set_down("claude", False)
    before = emulator.requests("claude")
    time.sleep(1.2)  # cool-down is 1 s in the test config
    results = [extract(clean) for _ in range(6)]
    answers = [r.get(timeout=30) for r in results]
    assert emulator.requests("claude") - before >= 1
    # after the probe succeeded the breaker is closed again: the next job goes to claude
    assert extract(clean).get(timeout=30)["chosen"] == "claude"
    assert all(a["fields"] for a in answers)


def test_two_workers_share_one_breaker(clean, emulator):
    emulator.set_down("claude")
    for _ in range(3):  # three failures, on whichever workers: the shared breaker opens
        extract(clean).get(timeout=30)
    assert emulator.requests("claude") == 3
    batch = [extract(clean) for _ in range(12)]
    answers = [job.get(timeout=30) for job in batch]
    served_by = {a["worker"].split("@")[0] for r in answers for a in r["attempts"] if a["ok"]}
    assert served_by == {"w1", "w2"}  # both processes ran jobs...
    assert emulator.requests("claude") == 3  # ...and neither called the open provider again


def test_bad_input_fails_fast_with_invalid_request(clean, emulator):
    with pytest.raises(InvalidRequestError, match="text"):
        clean.send(text="   ").get(timeout=30)
    with pytest.raises(InvalidRequestError, match="strategy"):
        clean.send(text=EMAIL.text, strategy="coin_flip").get(timeout=30)
    with pytest.raises(InvalidRequestError, match="provider"):
        clean.send(text=EMAIL.text, strategy="failover", providers=["nope"]).get(timeout=30)
    assert sum(emulator.requests(p) for p in ORDER) == 0


def test_no_healthy_provider(clean, emulator):
    from orchestration.breaker import RedisBreaker

    breaker = RedisBreaker(clean.redis, clean.settings.key_prefix, clean.settings.breaker)
    for name in ORDER:
        breaker.force_open(name, time.time(), 60)
    with pytest.raises(NoHealthyProvidersError):
        extract(clean).get(timeout=30)
    assert sum(emulator.requests(p) for p in ORDER) == 0


def test_never_sees_intermediate_failure(clean, emulator):
    emulator.configure("claude", error_rate=1.0, errors={"server": 1})
    job = extract(clean)
    try:
        result = job.get(timeout=30)
    except CeleryTimeout:  # pragma: no cover - would mean the job never finished
        pytest.fail("job did not finish")
    assert result["chosen"] == "openai"
    assert result["attempts"][0]["error"]["type"] == "ServerError"


def test_llama_cpp_python_server_answers_in_the_mode_it_accepts(clean, emulator):
    """A server that answers HTTP 500 to ``json_schema`` (llama-cpp-python): the first call falls
    back to ``json_object`` within itself, the fleet remembers it in Redis, the rest go straight
    to it, and the refusal never reaches the breaker."""
    emulator.configure("local", flavour="llama_cpp_python")
    for _ in range(4):  # more than consecutive_failures = 3 in the test config
        result = extract(clean, providers=["local"]).get(timeout=30)
        assert result["chosen"] == "local" and all(a["ok"] for a in result["attempts"])
    assert emulator.requests("local") == 5 and emulator.errors("local") == {"refused": 1}
    assert clean.redis.hget("quorum:{local}:output_mode", "mode") == b"json_object"
    assert clean.redis.hget("quorum:{local}:breaker", "consecutive") in (None, b"0")


def test_a_warm_worker_has_frozen_its_start_up_objects(clean):
    """``workers.gc_tuning`` ran once the worker was warm: its collector no longer walks the
    hundreds of thousands of objects start-up built (a full collection took 100-240 ms)."""
    log = (clean.logdir / "w1.log").read_text(errors="replace")
    line = next(x for x in log.splitlines() if "start-up objects frozen" in x)
    frozen = int(line.split("garbage collector: ", 1)[1].split()[0])
    assert frozen > 100_000
    assert "young collections every 10000 allocations" in line
