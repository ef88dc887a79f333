"""One attempt's life: deadline, gates, the call, bookkeeping — with simple injected parts."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestration.attempts import AttemptDeps, run_attempt
from orchestration.config import Settings
from orchestration.errors import ProviderTimeoutError, ServerError
from orchestration.models import Attempt, Candidate, ProviderResult

NOW = 1_000.0


@dataclass
class Ticket:
    log: list
    name: str

    def done(self, now: float, error_kind: str | None, tokens: int) -> None:
        self.log.append((self.name, error_kind, tokens))


@dataclass
class Gate:
    name: str
    log: list
    refuse: str | None = None

    def admit(self, provider: str, now: float):
        return self.refuse if self.refuse else Ticket(self.log, self.name)


@dataclass
class Recorder:
    seen: list = field(default_factory=list)
    fail: bool = False

    def record(self, attempt: Attempt, now: float, micro_usd: int) -> None:
        if self.fail:
            raise RuntimeError("redis down")
        self.seen.append((attempt, micro_usd))


def deps(gates=(), recorder=None, timeout_s=None):
    settings = Settings()
    if timeout_s:
        settings.providers["claude"].timeout_s = timeout_s
    return AttemptDeps(
        settings=settings,
        provider=lambda name: None,
        gates=list(gates),
        recorder=recorder or Recorder(),
        clock=lambda: NOW,
    )


def ok_invoke(provider, timeout):
    return ProviderResult(provider="claude", model="m", tokens_in=1000, tokens_out=100)


def run(invoke=ok_invoke, deadline=NOW + 30, **kw):
    return run_attempt(
        Candidate(provider="claude"), invoke, label="claude", task_id="t1", deadline=deadline, deps=deps(**kw)
    )


def test_success_is_priced_and_recorded():
    recorder = Recorder()
    attempt = run(recorder=recorder)
    assert attempt.ok and attempt.tokens_in == 1000
    # claude: $3 in / $15 out per million tokens → 3000 + 1500 micro-USD
    assert recorder.seen[0][1] == 4500 and attempt.cost_usd == 0.0045


def test_deadline_already_passed_makes_no_call():
    calls = []
    attempt = run(invoke=lambda p, t: calls.append(t), deadline=NOW - 1)
    assert not attempt.ok and attempt.error_type == "OrchestrationTimeoutError" and calls == []


def test_timeout_is_cut_to_the_deadline():
    seen = []
    run(invoke=lambda p, t: seen.append(t) or ok_invoke(p, t), deadline=NOW + 2.5)
    assert seen == [2.5]


def test_a_refusing_gate_skips_and_gives_back_earlier_tickets():
    log: list = []
    attempt = run(gates=[Gate("budget", log), Gate("breaker", log, refuse="circuit breaker open")])
    assert attempt.skipped and attempt.error["reason"] == "circuit breaker open"
    assert log == [("budget", "ProviderUnavailableError", 0)]


def test_tickets_hear_the_outcome():
    log: list = []

    def boom(provider, timeout):
        raise ServerError("HTTP 500", provider="claude", status=500)

    attempt = run(invoke=boom, gates=[Gate("breaker", log)])
    assert attempt.error_type == "ServerError" and log == [("breaker", "ServerError", 0)]


def test_a_deadline_cut_timeout_is_not_the_providers_fault():
    log: list = []

    def slow(provider, timeout):
        raise ProviderTimeoutError("timed out", provider="claude")

    attempt = run(invoke=slow, deadline=NOW + 1, gates=[Gate("breaker", log)])
    assert attempt.error_type == "OrchestrationTimeoutError"
    assert log == [("breaker", "OrchestrationTimeoutError", 0)]  # does not count for the breaker


def test_an_unexpected_exception_becomes_a_provider_error():
    def bug(provider, timeout):
        raise KeyError("surprise")

    attempt = run(invoke=bug)
    assert attempt.error_type == "ProviderError" and "KeyError" in attempt.error["message"]


def test_bookkeeping_failure_keeps_a_good_answer():
    assert run(recorder=Recorder(fail=True)).ok
