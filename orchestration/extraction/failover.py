"""Failover planning: after an attempt fails, decide the next hop or how the job ends.

Pure: the caller passes in the attempts so far, the clock and a way to ask whether a provider
is available (breaker closed, budget left) without sending anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from orchestration.errors import (
    AllProvidersFailedError,
    InvalidRequestError,
    NoHealthyProvidersError,
    OrchestrationTimeoutError,
    ProviderUnavailableError,
    QuorumError,
    RateLimitedError,
)
from orchestration.extraction.jobs import ExtractionSpec
from orchestration.models import Attempt, Candidate

#: Never schedule a retry-after wait that would leave less than this before the deadline.
_RETRY_MARGIN_S = 0.5


@dataclass
class Send:
    """Send candidate ``index`` next, after ``countdown`` seconds (a provider's retry-after)."""

    index: int
    countdown: float = 0.0
    skipped: list[Attempt] = field(default_factory=list)


@dataclass
class Fail:
    """End the job with ``error``."""

    error: QuorumError
    skipped: list[Attempt] = field(default_factory=list)


def skipped_attempt(candidate: Candidate, label: str, reason: str) -> Attempt:
    """The record of a candidate that was not sent (breaker open, budget spent, rate limited)."""
    err = ProviderUnavailableError(
        f"{candidate.provider} skipped: {reason}", provider=candidate.provider, reason=reason
    )
    return Attempt(
        provider=candidate.provider, label=label, params=candidate.params, skipped=True, error=err.to_dict()
    )


def _retry_after(spec: ExtractionSpec, attempts: list[Attempt], now: float) -> Send | None:
    """Retry a rate-limited provider once if its retry-after ends before the deadline."""
    tried: dict[str, int] = {}
    for a in attempts:
        if not a.skipped:
            tried[a.provider] = tried.get(a.provider, 0) + 1
    best: Send | None = None
    for a in attempts:
        if not a.failed_with(RateLimitedError) or tried.get(a.provider, 0) > 1:
            continue
        wait = float((a.error or {}).get("retry_after") or 0.0)
        if now + wait + _RETRY_MARGIN_S >= spec.deadline:
            continue
        index = next(i for i, c in enumerate(spec.candidates) if c.provider == a.provider)
        if best is None or wait < best.countdown:
            best = Send(index=index, countdown=wait)
    return best


def next_step(
    spec: ExtractionSpec,
    attempts: list[Attempt],
    start: int,
    now: float,
    unavailable: Callable[[str], str | None],
) -> Send | Fail:
    """The next hop from candidate ``start`` on, skipping unavailable providers, or the end."""
    if attempts and attempts[-1].failed_with(InvalidRequestError):
        last = attempts[-1].error or {}
        return Fail(InvalidRequestError(str(last.get("message", "invalid request"))))
    if spec.remaining(now) <= 0:
        return Fail(_job_error(OrchestrationTimeoutError, spec, attempts, "the job's deadline passed"))
    skipped: list[Attempt] = []
    for index in range(start, len(spec.candidates)):
        reason = unavailable(spec.candidates[index].provider)
        if reason is None:
            return Send(index=index, skipped=skipped)
        candidate = spec.candidates[index]
        skipped.append(skipped_attempt(candidate, candidate.label(), reason))
    everything = attempts + skipped
    retry = _retry_after(spec, everything, now)
    if retry is not None:
        retry.skipped = skipped
        return retry
    if all(a.skipped for a in everything):
        return Fail(
            _job_error(NoHealthyProvidersError, spec, everything, "no provider could be tried"), skipped
        )
    return Fail(_job_error(AllProvidersFailedError, spec, everything, "every provider failed"), skipped)


def _job_error(
    cls: type[QuorumError], spec: ExtractionSpec, attempts: list[Attempt], what: str
) -> QuorumError:
    lines = ", ".join(f"{a.label or a.provider}: {a.error_type}" for a in attempts) or "none"
    summary = [a.summary() for a in attempts]
    return cls(f"job {spec.job_id}: {what} ({lines})", job_id=spec.job_id, attempts=summary)
