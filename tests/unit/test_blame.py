"""Who an outcome is held against: provider faults open breakers and count in health; unusable
answers are a quality figure (health, consensus weight) but never open the breaker; request
faults count nowhere; every billed token is counted and every job once."""

from __future__ import annotations

import pytest
import redis

from orchestration.attempts import AttemptDeps, run_attempt
from orchestration.breaker import BreakerState, Outcome, RedisBreaker, classify
from orchestration.config import BreakerConfig, Settings
from orchestration.errors import (
    AuthError,
    BadRequestError,
    InsufficientResponsesError,
    InvalidOutputError,
    InvalidRequestError,
    OrchestrationTimeoutError,
    ProviderUnavailableError,
    ServerError,
    blame_of,
)
from orchestration.models import Attempt, Candidate
from orchestration.state import QualityGate, job_micro_usd, read_health, read_weights, record_call, record_job
from orchestration.state.accuracy import validity
from orchestration.state.costs import job_stats, totals
from orchestration.status import as_json, fleet_status
from workers.runtime import HealthRecorder

PX = "quorum:"
NOW = 1_000_000.0
STRICT = BreakerConfig(consecutive_failures=3, min_calls=3, failure_rate=0.5)


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("cls", "outcome", "blame"),
    [
        (ServerError, Outcome.FAILURE, "provider"),
        (AuthError, Outcome.AUTH, "provider"),
        (InvalidOutputError, Outcome.IGNORED, "quality"),
        (InvalidRequestError, Outcome.IGNORED, "request"),
        (BadRequestError, Outcome.IGNORED, "request"),
        (ProviderUnavailableError, Outcome.IGNORED, "none"),
        (OrchestrationTimeoutError, Outcome.IGNORED, "none"),
    ],
)
def test_each_error_kind_has_one_breaker_outcome_and_one_blame(cls, outcome, blame) -> None:
    assert classify(cls.__name__) is outcome
    assert blame_of(cls.__name__) == blame


def test_unknown_error_kinds_blame_the_provider() -> None:
    assert blame_of("SomethingNew") == "provider" and classify("SomethingNew") is Outcome.FAILURE


@pytest.mark.parametrize("cls", [InvalidOutputError, InvalidRequestError, BadRequestError])
def test_request_and_quality_failures_never_open_the_breaker(redis_client: redis.Redis, cls) -> None:
    breaker = RedisBreaker(redis_client, PX, STRICT)
    for i in range(20):  # far beyond consecutive_failures and the failure rate
        permit = breaker.acquire("openai", NOW + i)
        assert permit.allowed
        breaker.record_failure("openai", NOW + i, cls.__name__, permit)
    assert breaker.state("openai", NOW + 20).state is BreakerState.CLOSED


def test_provider_faults_still_open_it(redis_client: redis.Redis) -> None:
    breaker = RedisBreaker(redis_client, PX, STRICT)
    for i in range(3):
        breaker.record_failure("openai", NOW + i, "ServerError", breaker.acquire("openai", NOW + i))
    assert breaker.state("openai", NOW + 3).state is BreakerState.OPEN


# --------------------------------------------------------------------------- health


def test_health_files_each_outcome_by_blame(redis_client: redis.Redis) -> None:
    def call(kind: str | None, latency: float = 100.0) -> None:
        record_call(redis_client, PX, "openai", ok=kind is None, now=NOW, latency_ms=latency, error_kind=kind,
                    message=f"{kind} happened")  # fmt: skip

    for _ in range(3):
        call(None)
    call("InvalidOutputError", 300.0)
    call("ServerError")
    for _ in range(5):  # a hostile producer's impossible schemas and parameters
        call("InvalidRequestError")
        call("BadRequestError")
    call("ProviderUnavailableError")  # skipped: not a call
    call("OrchestrationTimeoutError")  # the job's deadline: nobody's fault
    h = read_health(redis_client, PX, "openai")
    assert (h.calls, h.successes, h.invalid_outputs) == (5, 3, 1)
    assert h.errors == {"ServerError": 1}
    assert h.request_errors == {"InvalidRequestError": 5, "BadRequestError": 5}
    assert h.success_rate == pytest.approx(3 / 5)
    assert h.invalid_rate == pytest.approx(1 / 4)
    assert h.last_error == "ServerError happened" and h.last_invalid == "InvalidOutputError happened"
    assert h.latency_p95_ms == 300.0  # an unusable answer still took its time to arrive


def test_request_faults_leave_a_new_provider_untouched(redis_client: redis.Redis) -> None:
    for _ in range(8):
        record_call(redis_client, PX, "gemini", ok=False, now=NOW, error_kind="InvalidRequestError")
    h = read_health(redis_client, PX, "gemini")
    assert (h.calls, h.errors, h.success_rate, h.invalid_rate) == (0, {}, None, None)


# --------------------------------------------------------------------------- consensus weight


def test_validity_is_smoothed_and_floored() -> None:
    assert validity(0, 0) == 1.0
    assert validity(0, 1) == 0.5
    assert validity(9, 0) == 1.0
    assert validity(8, 2) == pytest.approx(9 / 11)
    assert validity(0, 10_000) == 0.05


def test_invalid_outputs_lower_the_providers_consensus_weight(redis_client: redis.Redis) -> None:
    for _ in range(4):
        record_call(redis_client, PX, "good", ok=True, now=NOW, latency_ms=1.0)
        record_call(redis_client, PX, "weak", ok=True, now=NOW, latency_ms=1.0)
    for _ in range(5):
        record_call(redis_client, PX, "weak", ok=False, now=NOW, error_kind="InvalidOutputError")
        record_call(redis_client, PX, "good", ok=False, now=NOW, error_kind="ServerError")  # outages
    weights = read_weights(redis_client, PX, ["good", "weak", "new"], ["name"])
    assert weights["good", "name"] == 0.5  # outages are no quality figure
    assert weights["new", "name"] == 0.5
    assert weights["weak", "name"] == pytest.approx(0.5 * 5 / 10)


# --------------------------------------------------------------------------- billed tokens


class _Gate:
    def __init__(self) -> None:
        self.debits: list[tuple[str | None, int]] = []

    def admit(self, provider: str, now: float) -> _Gate:
        return self

    def done(self, now: float, error_kind: str | None, tokens: int) -> None:
        self.debits.append((error_kind, tokens))


def _failed_parse(provider, timeout):
    raise InvalidOutputError(
        "claude output failed the schema at name: 3 is not of type 'string'",
        provider="claude", tokens_in=1000, tokens_out=100, model="claude-x",
    )  # fmt: skip


def test_a_failed_parse_is_priced_ledgered_and_debited(redis_client: redis.Redis) -> None:
    gate = _Gate()
    deps = AttemptDeps(
        settings=Settings(),
        provider=lambda name: None,
        gates=[gate],
        recorder=HealthRecorder(redis_client, PX),
        clock=lambda: NOW,
    )
    args = {"label": "claude", "task_id": "attempt-1", "deadline": NOW + 30, "deps": deps}
    attempt = run_attempt(Candidate(provider="claude"), _failed_parse, **args)
    assert not attempt.ok and attempt.error_type == "InvalidOutputError"
    # claude: $3 in / $15 out per million tokens → 3000 + 1500 micro-USD, as for an answer
    assert (attempt.tokens_in, attempt.tokens_out, attempt.cost_usd) == (1000, 100, 0.0045)
    assert attempt.model == "claude-x"
    assert gate.debits == [("InvalidOutputError", 1100)]  # the tpm bucket sees them
    again = run_attempt(Candidate(provider="claude"), _failed_parse, **args)  # a redelivery
    assert again.cost_usd == 0.0045
    t = totals(redis_client, PX, ["claude"])["claude"]
    assert (t.calls, t.tokens_in, t.tokens_out, t.micro_usd) == (1, 1000, 100, 4500)
    assert read_health(redis_client, PX, "claude").invalid_outputs == 2


def test_a_call_that_never_answered_costs_nothing(redis_client: redis.Redis) -> None:
    def down(provider, timeout):
        raise ServerError("claude: HTTP 500", provider="claude", status=500)

    deps = AttemptDeps(settings=Settings(), provider=lambda name: None, gates=[],
                       recorder=HealthRecorder(redis_client, PX), clock=lambda: NOW)  # fmt: skip
    attempt = run_attempt(Candidate(provider="claude"), down, label="claude", task_id="a2", deadline=NOW + 9,
                          deps=deps)  # fmt: skip
    assert (attempt.tokens_in, attempt.cost_usd) == (0, 0.0)
    assert totals(redis_client, PX, ["claude"])["claude"].calls == 0


# --------------------------------------------------------------------------- job counts


def test_a_failed_jobs_cost_comes_from_its_error_attempts(redis_client: redis.Redis) -> None:
    ok = Attempt(provider="a", ok=True, cost_usd=0.002)
    assert job_micro_usd([ok, {"cost_usd": 0.001}, {"cost_usd": None}, {}]) == 3000
    error = InsufficientResponsesError("1 usable answer", attempts=[{"provider": "a", "cost_usd": 0.001}])
    record_job(redis_client, PX, "answered", job_micro_usd([ok]))
    record_job(redis_client, PX, "failed", job_micro_usd(error.details["attempts"]))
    record_job(redis_client, PX, "failed", 999)  # counted once
    assert job_stats(redis_client, PX) == (2, 3000, pytest.approx(0.0015))


def test_status_shows_the_invalid_output_rate_of_a_healthy_provider(redis_client: redis.Redis) -> None:
    settings = Settings()
    record_call(redis_client, settings.key_prefix, "openai", ok=True, now=NOW, latency_ms=5.0)
    record_call(
        redis_client, settings.key_prefix, "openai", ok=False, now=NOW, error_kind="InvalidOutputError"
    )
    data = as_json(fleet_status(redis_client, settings, NOW))
    row = next(p for p in data["providers"] if p["provider"] == "openai")
    assert row["healthy"] and row["errors"] == {}
    assert (row["invalid_outputs"], row["invalid_rate"], row["success_rate"]) == (1, 0.5, 0.5)


# --------------------------------------------------------------------------- quality threshold


def _answers(r: redis.Redis, provider: str, now: float, ok: int, invalid: int) -> None:
    for _ in range(ok):
        record_call(r, PX, provider, ok=True, now=now, latency_ms=1.0)
    for _ in range(invalid):
        record_call(r, PX, provider, ok=False, now=now, error_kind="InvalidOutputError")


def test_the_quality_threshold_is_off_by_default(redis_client: redis.Redis) -> None:
    _answers(redis_client, "weak", NOW, ok=0, invalid=50)
    gate = QualityGate(redis_client, PX, BreakerConfig())
    assert gate.refusal("weak", NOW) is None and not isinstance(gate.admit("weak", NOW), str)


def test_the_quality_threshold_takes_a_weak_provider_out_until_the_window_forgets(
    redis_client: redis.Redis,
) -> None:
    cfg = BreakerConfig(max_invalid_rate=0.5, quality_window_s=120, quality_min_answers=4)
    gate = QualityGate(redis_client, PX, cfg)
    _answers(redis_client, "openai", NOW, ok=0, invalid=3)
    assert gate.refusal("openai", NOW) is None  # too few answers to judge
    _answers(redis_client, "openai", NOW + 30, ok=1, invalid=0)
    reason = gate.admit("openai", NOW + 30)
    assert isinstance(reason, str) and "3 of its last 4 answers" in reason
    _answers(redis_client, "gemini", NOW, ok=9, invalid=1)
    assert gate.refusal("gemini", NOW + 30) is None
    assert gate.refusal("openai", NOW + 300) is None  # back in rotation: the window moved on
    settings = Settings()
    settings.breaker = cfg
    row = next(p for p in fleet_status(redis_client, settings, NOW + 30).providers if p.provider == "openai")
    assert not row.healthy and row.reason == reason and row.state == "closed"
