"""One provider attempt, start to end: deadline, gates (breaker, budget, rate limit), the SDK
call with a timeout cut to the deadline, then health, breaker and cost bookkeeping.

Every token the server reported is counted, whatever happened to the answer: a failed attempt
whose error carries usage (an answer that failed parsing, say) gets its tokens and cost, which
the rate-limit tickets and the cost ledger (hence the budgets) then see.

It never raises: every outcome is an :class:`Attempt`, so a chord header can return it and the
failover chain can re-raise its error. Its collaborators come in as arguments (no globals).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from orchestration.config import Settings
from orchestration.errors import (
    ConfigError,
    OrchestrationTimeoutError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuorumError,
)
from orchestration.models import Attempt, Candidate, ProviderResult
from orchestration.pricing import cost_micro_usd, usd
from orchestration.providers.base import Provider

log = logging.getLogger("quorum.attempt")


class Ticket(Protocol):
    """A gate's permission for one call; told how the call went."""

    def done(self, now: float, error_kind: str | None, tokens: int) -> None:
        """Report the outcome (``error_kind`` None on success, else the error class name)."""


class Gate(Protocol):
    """Something that may refuse a call before it is sent (breaker, budget, rate limit)."""

    def admit(self, provider: str, now: float) -> Ticket | str:
        """A ticket to go ahead, or the reason the provider is skipped."""


class Recorder(Protocol):
    """Health and cost bookkeeping after a call."""

    def record(self, attempt: Attempt, now: float, micro_usd: int) -> None:
        """Record one finished call (idempotent on ``attempt.task_id``)."""


@dataclass
class AttemptDeps:
    """What an attempt needs from the world."""

    settings: Settings
    provider: Callable[[str], Provider]
    gates: list[Gate]
    recorder: Recorder
    clock: Callable[[], float] = time.time


def billed_tokens(error: QuorumError) -> tuple[int, int]:
    """The usage a failed call's server reported (its ``tokens_in``/``tokens_out``)."""
    out = []
    for value in (error.tokens_in, error.tokens_out):
        out.append(value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0)
    return out[0], out[1]


def _error_attempt(base: Attempt, error: QuorumError, latency_ms: float = 0.0) -> Attempt:
    return base.model_copy(update={"ok": False, "error": error.to_dict(), "latency_ms": latency_ms})


#: How an attempt talks to its provider: ``invoke(provider, timeout_s) -> ProviderResult``.
Invoke = Callable[[Provider, float], ProviderResult]


def extraction(text: str, schema: dict[str, Any], candidate: Candidate) -> Invoke:
    """The invoke of an extraction attempt."""
    return lambda provider, timeout: provider.extract(text, schema, candidate.params, timeout)


def run_attempt(
    candidate: Candidate,
    invoke: Invoke,
    *,
    label: str,
    task_id: str | None,
    deadline: float,
    deps: AttemptDeps,
) -> Attempt:
    """Call one provider for one candidate and return the outcome (never raises)."""
    cfg = deps.settings.provider(candidate.provider)
    base = Attempt(
        provider=candidate.provider,
        model=cfg.model,
        label=label,
        params=candidate.params,
        task_id=task_id,
    )
    now = deps.clock()
    remaining = deadline - now
    if remaining <= 0:
        return _error_attempt(
            base,
            OrchestrationTimeoutError(
                "the job's deadline passed before this attempt started", provider=candidate.provider
            ),
        )
    tickets: list[Ticket] = []
    for gate in deps.gates:
        ticket = gate.admit(candidate.provider, now)
        if isinstance(ticket, str):
            reason = ticket
            for t in tickets:  # give back what the earlier gates granted
                t.done(now, ProviderUnavailableError.__name__, 0)
            skipped = ProviderUnavailableError(
                f"{candidate.provider} skipped: {reason}", provider=candidate.provider, reason=reason
            )
            return _error_attempt(base, skipped).model_copy(update={"skipped": True})
        tickets.append(ticket)
    timeout = min(cfg.timeout_s, remaining)
    started = time.perf_counter()
    result: ProviderResult | None = None
    error: QuorumError | None = None
    try:
        result = invoke(deps.provider(candidate.provider), timeout)
    except QuorumError as e:
        error = e
    except Exception as e:  # a bug or an SDK surprise must not kill the job
        log.exception("unexpected error calling %s", candidate.provider)
        error = ProviderError(
            f"unexpected {type(e).__name__} from {candidate.provider}", provider=candidate.provider
        )
    latency_ms = (time.perf_counter() - started) * 1000
    now = deps.clock()
    if result is not None:
        micro = cost_micro_usd(cfg, result.tokens_in, result.tokens_out)
        attempt = base.model_copy(
            update={
                "ok": True,
                "result": result,
                "model": result.model,
                "latency_ms": latency_ms,
                "tokens_in": result.tokens_in,
                "tokens_out": result.tokens_out,
                "cost_usd": usd(micro),
            }
        )
        kind = None
    else:
        assert error is not None
        if timeout < cfg.timeout_s and isinstance(error, ProviderTimeoutError):
            # The deadline, not the provider, cut this call short: don't hold it against it.
            error = OrchestrationTimeoutError(
                f"{candidate.provider}: the job's deadline cut the call short after {timeout:.2f}s",
                provider=candidate.provider,
            )
        attempt, micro = _error_attempt(base, error, latency_ms), 0
        tokens_in, tokens_out = billed_tokens(error)
        if tokens_in or tokens_out:  # the server answered and billed it, usable or not
            micro = cost_micro_usd(cfg, tokens_in, tokens_out)
            update: dict[str, Any] = {
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "cost_usd": usd(micro),
            }
            if isinstance(error.model, str) and error.model:
                update["model"] = error.model
            attempt = attempt.model_copy(update=update)
        # A key missing on this worker is this worker's problem: don't open the fleet's breaker.
        kind = ConfigError.__name__ if error.reason == "missing_key" else error.kind
    for t in tickets:
        t.done(now, kind, attempt.tokens_in + attempt.tokens_out)
    try:
        deps.recorder.record(attempt, now, micro)
    except Exception:  # bookkeeping must never turn a good answer into a failure
        log.warning("could not record the outcome of %s", label, exc_info=True)
    return attempt
