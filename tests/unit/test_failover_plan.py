"""The failover planner: next hop, skipping, retry-after within the deadline, how a job ends."""

from __future__ import annotations

import pytest

from orchestration.config import Settings
from orchestration.errors import (
    AllProvidersFailedError,
    InvalidRequestError,
    NoHealthyProvidersError,
    OrchestrationTimeoutError,
    RateLimitedError,
    ServerError,
)
from orchestration.extraction import Fail, Send, next_step, parse_request, prepare_extract
from orchestration.models import Attempt
from orchestration.state import FleetSetting

NOW = 1_000_000.0


def spec(deadline_s: float = 30.0, providers=("claude", "openai", "gemini")):
    request = parse_request(
        (), {"text": "hello", "strategy": "failover", "providers": list(providers), "deadline_s": deadline_s}
    )
    return prepare_extract(request, job_id="j1", settings=Settings(), fleet=FleetSetting(), now=NOW)


def failed(provider: str, error) -> Attempt:
    return Attempt(provider=provider, label=provider, error=error.to_dict(), latency_ms=12.5)


def nobody_down(_: str) -> str | None:
    return None


def test_first_hop_is_the_first_available_provider():
    step = next_step(spec(), [], 0, NOW, nobody_down)
    assert isinstance(step, Send) and step.index == 0 and step.countdown == 0


def test_open_breakers_are_skipped_and_recorded_without_a_call():
    down = {"claude": "circuit breaker open"}
    step = next_step(spec(), [], 0, NOW, down.get)
    assert isinstance(step, Send) and step.index == 1
    assert [a.provider for a in step.skipped] == ["claude"]
    assert step.skipped[0].skipped and step.skipped[0].error_type == "ProviderUnavailableError"


def test_every_provider_failed_lists_each_attempt():
    attempts = [
        failed(p, ServerError("boom", provider=p, status=500)) for p in ("claude", "openai", "gemini")
    ]
    step = next_step(spec(), attempts, 3, NOW, nobody_down)
    assert isinstance(step, Fail) and isinstance(step.error, AllProvidersFailedError)
    listed = step.error.details["attempts"]
    assert [a["provider"] for a in listed] == ["claude", "openai", "gemini"]
    assert all(a["error"] == "ServerError" and a["latency_ms"] == 12.5 for a in listed)


def test_nothing_could_be_tried_is_no_healthy_providers():
    step = next_step(spec(), [], 0, NOW, lambda p: "circuit breaker open")
    assert isinstance(step, Fail) and isinstance(step.error, NoHealthyProvidersError)


def test_deadline_passed_ends_the_job():
    attempts = [failed("claude", ServerError("boom", provider="claude"))]
    step = next_step(spec(deadline_s=5), attempts, 1, NOW + 6, nobody_down)
    assert isinstance(step, Fail) and isinstance(step.error, OrchestrationTimeoutError)


def test_rate_limited_provider_is_retried_after_its_retry_after_when_it_fits():
    attempts = [
        failed("claude", RateLimitedError("slow down", provider="claude", status=429, retry_after=2.0)),
        failed("openai", ServerError("boom", provider="openai")),
        failed("gemini", ServerError("boom", provider="gemini")),
    ]
    step = next_step(spec(), attempts, 3, NOW, nobody_down)
    assert isinstance(step, Send) and step.index == 0 and step.countdown == 2.0


def test_retry_after_past_the_deadline_is_not_waited_for():
    attempts = [
        failed("claude", RateLimitedError("slow down", provider="claude", status=429, retry_after=60.0)),
        failed("openai", ServerError("boom", provider="openai")),
        failed("gemini", ServerError("boom", provider="gemini")),
    ]
    step = next_step(spec(deadline_s=30), attempts, 3, NOW, nobody_down)
    assert isinstance(step, Fail) and isinstance(step.error, AllProvidersFailedError)


def test_a_provider_is_retried_after_rate_limiting_only_once():
    limited = RateLimitedError("slow down", provider="claude", status=429, retry_after=1.0)
    attempts = [failed("claude", limited), failed("openai", ServerError("x")), failed("claude", limited)]
    step = next_step(spec(providers=("claude", "openai")), attempts, 2, NOW, nobody_down)
    assert isinstance(step, Fail)


def test_invalid_request_stops_failover_at_once():
    attempts = [failed("claude", InvalidRequestError("text is empty"))]
    step = next_step(spec(), attempts, 1, NOW, nobody_down)
    assert isinstance(step, Fail) and isinstance(step.error, InvalidRequestError)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"text": ""}, "text"),
        ({"text": "x", "strategy": "coin_flip"}, "strategy"),
        ({"text": "x", "params": {"temperature": float("nan")}}, "temperature"),
        ({"text": "x", "params": {"temperature": -1}}, "temperature"),
        ({"text": "x", "surprise": 1}, "surprise"),
        ({"text": 42}, "text"),
        (
            {"text": "x", "json_schema": {"type": "object", "properties": {"a": {"type": "nope"}}}},
            "json_schema",
        ),
    ],
)
def test_bad_requests_name_the_problem(kwargs, needle):
    with pytest.raises(InvalidRequestError, match=needle):
        request = parse_request((), kwargs)
        prepare_extract(request, job_id="j", settings=Settings(), fleet=FleetSetting(), now=NOW)


def test_unknown_provider_is_refused_with_the_configured_ones():
    request = parse_request((), {"text": "x", "providers": ["nope"]})
    with pytest.raises(InvalidRequestError, match="unknown provider 'nope'; configured: claude"):
        prepare_extract(request, job_id="j", settings=Settings(), fleet=FleetSetting(), now=NOW)


def test_positional_args_are_refused():
    with pytest.raises(InvalidRequestError, match="keyword arguments only"):
        parse_request(("hello",), {})


def test_fleet_setting_drives_strategy_and_order():
    request = parse_request((), {"text": "x"})
    fleet = FleetSetting(strategy="failover", order=["gemini", "claude"])
    job = prepare_extract(request, job_id="j", settings=Settings(), fleet=fleet, now=NOW)
    assert [c.provider for c in job.candidates] == ["gemini", "claude"]
    assert job.deadline == NOW + 60
