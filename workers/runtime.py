"""Per-process dependencies of the tasks (settings, Redis, providers, breaker, recorders),
built once per worker process on first use and handed to domain code as arguments."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis as redis_lib
from celery.signals import task_failure
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from orchestration.attempts import AttemptDeps, Gate, Invoke, Ticket, run_attempt
from orchestration.breaker import BreakerSnapshot, ResilientBreaker, fast_fail_client
from orchestration.breaker.admission import admits_on_snapshot, closed_permit
from orchestration.config import Settings
from orchestration.errors import InvalidRequestError, QuorumError
from orchestration.models import Attempt, Candidate
from orchestration.providers import ProviderRegistry
from orchestration.state import (
    BudgetGate,
    QualityGate,
    RateLimitGate,
    RedisModeMemory,
    call_record,
    cost_call,
    job_micro_usd,
)
from orchestration.state.costs import queue_record_job
from orchestration.state.scripts import Queued, ScriptCall, execute_queued, run_batch
from workers.app import REDIS_OUTAGE_GRACE_S, app, broker_urls, unconfigured_error
from workers.job_errors import JOB_TASKS

log = logging.getLogger("quorum.runtime")

REDIS_ERRORS = (redis_lib.ConnectionError, redis_lib.TimeoutError)

T = TypeVar("T")


def state_client(url: str) -> redis_lib.Redis:
    """A Redis client for job coordination (publication guard, chord answers): rides out an
    outage of up to ``REDIS_OUTAGE_GRACE_S`` (every command it sends is idempotent or guarded)."""
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=int(REDIS_OUTAGE_GRACE_S / 0.5))
    return redis_lib.Redis.from_url(
        url, socket_timeout=5.0, socket_connect_timeout=5.0, health_check_interval=10, retry=retry
    )


@dataclass
class _BreakerTicket:
    """The breaker's permit for one call; its outcome waits for the call's other records."""

    post: PostCall
    permit: Any

    def done(self, now: float, error_kind: str | None, tokens: int) -> None:
        self.post.outcome = (self.permit, error_kind)


@dataclass
class BreakerGate:
    """The circuit breaker as a gate: open → skipped without an HTTP call. A call whose job's
    entry read the breaker CLOSED a moment ago (``post.closed_at``) starts without ``acquire``
    (see :mod:`orchestration.breaker.admission`); its outcome is recorded as an ordinary call's."""

    post: PostCall

    def admit(self, provider: str, now: float) -> Ticket | str:
        breaker = self.post.breaker
        if not breaker.degraded and admits_on_snapshot(self.post.closed_at, now):
            return _BreakerTicket(self.post, closed_permit(provider))
        permit = breaker.acquire(provider, now)
        if not permit.allowed:
            return permit.reason or "circuit breaker open"
        return _BreakerTicket(self.post, permit)


@dataclass
class HealthRecorder:
    """Writes each finished call into the provider's health figures and the cost ledger
    (every call the server reported usage for, answer usable or not), in one round trip."""

    redis: redis_lib.Redis
    prefix: str

    def calls(self, attempt: Attempt, now: float, micro_usd: int) -> list[ScriptCall]:
        """The Lua runs that record ``attempt`` (ledger, then health; all of its provider's slot)."""
        out = []
        if attempt.task_id and (attempt.ok or attempt.tokens_in or attempt.tokens_out):
            out.append(
                cost_call(
                    self.prefix,
                    attempt_id=attempt.task_id,
                    provider=attempt.provider,
                    model=attempt.model,
                    tokens_in=attempt.tokens_in,
                    tokens_out=attempt.tokens_out,
                    micro_usd=micro_usd,
                    now=now,
                )
            )
        error = attempt.error or {}
        health = call_record(
            self.prefix,
            attempt.provider,
            ok=attempt.ok,
            latency_ms=attempt.latency_ms,
            error_kind=error.get("type"),
            message=error.get("message"),
            now=now,
        )
        if health is not None:
            out.append(health)
        return out

    def send(self, calls: list[ScriptCall]) -> None:
        """Run ``calls`` in one round trip. Health alone is telemetry: a Redis outage then
        passes quietly; a ledger record that could not be written raises (the caller logs it)."""
        if not calls:
            return
        try:
            run_batch(self.redis, calls)
        except REDIS_ERRORS as e:
            if any(c.name == "ledger.lua" for c in calls):
                raise
            log.debug("health of %s not recorded: Redis unreachable (%s)", calls[0].keys[0], e)

    def record(self, attempt: Attempt, now: float, micro_usd: int) -> None:
        if attempt.skipped:
            return
        self.send(self.calls(attempt, now, micro_usd))


@dataclass
class PostCall(HealthRecorder):
    """One attempt's breaker gate and recorder: the breaker's outcome, the cost ledger and the
    health figures of the call go to Redis as one script, one round trip (all three live in the
    provider's hash slot). While the breaker is degraded to per-process state, the ledger and
    health records are sent on their own, as before.

    With ``defer``, the records wait for :meth:`flush`, which can take another step's commands
    along in the same round trip (a failover hop's publication guard); the caller must flush
    (``finally``), whatever happens in between. ``closed_at``: when the job's entry read the
    provider's breaker CLOSED (from the signed call message; None: acquire as usual)."""

    breaker: ResilientBreaker | None = None
    outcome: tuple[Any, str | None] | None = None
    defer: bool = False
    closed_at: float | None = None
    held: tuple[Attempt, float, int] | None = None

    def gate(self) -> BreakerGate:
        return BreakerGate(self)

    def record(self, attempt: Attempt, now: float, micro_usd: int) -> None:
        if self.defer:
            self.held = (attempt, now, micro_usd)
            return
        self._send(attempt, now, micro_usd, None)

    def flush(self, extra: Queued[T] | None = None) -> list[T]:
        """Send the held records, with ``extra`` in the same round trip when the breaker's
        state is in Redis: ``[extra's result]`` when it ran, else ``[]`` (nothing held, the
        breaker degraded, or the records failed: the caller sends ``extra`` itself). Never
        raises: bookkeeping must not turn a good answer into a failure."""
        held, self.held = self.held, None
        if held is None:
            return []
        try:
            return self._send(*held, extra)
        except Exception:
            log.warning("could not record the outcome of %s", held[0].label, exc_info=True)
            return []

    def _send(self, attempt: Attempt, now: float, micro_usd: int, extra: Queued[T] | None) -> list[T]:
        calls = [] if attempt.skipped else self.calls(attempt, now, micro_usd)
        if self.outcome is not None and self.breaker is not None:
            (permit, error_kind), self.outcome = self.outcome, None
            replies, ran = self.breaker.record_outcome_with(
                attempt.provider, now, error_kind, permit, also=calls, extra=extra
            )
            if replies is not None:
                return ran
        self.send(calls)
        return []


@dataclass
class Runtime:
    """Everything a task needs, shared by the threads of one worker process."""

    settings: Settings
    redis: redis_lib.Redis
    fast_redis: redis_lib.Redis
    providers: ProviderRegistry
    breaker: ResilientBreaker
    budget: BudgetGate
    limits: RateLimitGate
    quality: QualityGate
    gates: list[Gate] = field(default_factory=list)
    #: The state Redis is the result backend's server (one URL for both, the default): a write
    #: to the state may then ride in the round trip that stores an answer.
    state_on_backend: bool = True
    #: The state Redis is the broker's server too (the default): a task's ack may then ride in
    #: the round trip that stores its job's answer (``workers.ack_along``).
    broker_on_state: bool = True

    @property
    def prefix(self) -> str:
        return self.settings.key_prefix

    def unavailable(
        self, provider: str, now: float, breakers: Mapping[str, BreakerSnapshot] | None = None
    ) -> str | None:
        """Why ``provider`` should be skipped right now (no state change), or None; its breaker
        from ``breakers`` when the caller read it already (no round trip here then)."""
        snapshot = breakers.get(provider) if breakers else None

        def breaker(provider: str, now: float) -> str | None:
            return self.breaker.refusal(provider, now, snapshot)

        for check in (breaker, self.budget.refusal, self.limits.refusal, self.quality.refusal):
            try:
                reason = check(provider, now)
            except REDIS_ERRORS:
                reason = None  # the call itself will find out; don't skip on a Redis blip
            if reason:
                return reason
        return None

    def record_job(
        self,
        job_id: str,
        attempts: Iterable[Attempt | dict[str, Any]],
        *,
        kind: str = "extract",
        strategy: str | None = None,
        outcome: str | None = None,
    ) -> None:
        """Count the job and its total cost once (for the average cost per job), answered or not,
        and under its kind, strategy and outcome (``ok`` when an attempt answered, else ``failed``)."""
        count = self.job_count(job_id, attempts, kind=kind, strategy=strategy, outcome=outcome)
        try:
            execute_queued(self.fast_redis, [count])
        except REDIS_ERRORS:
            log.warning("job %s: could not record its cost (Redis unreachable)", job_id)

    def job_count(
        self,
        job_id: str,
        attempts: Iterable[Attempt | dict[str, Any]],
        *,
        kind: str = "extract",
        strategy: str | None = None,
        outcome: str | None = None,
    ) -> Queued[bool]:
        """:meth:`record_job`'s write, to send in another step's round trip (the result store's)."""
        attempts = list(attempts)
        if outcome is None:
            outcome = "ok" if any(isinstance(a, Attempt) and a.ok for a in attempts) else "failed"
        micro = job_micro_usd(attempts)
        return queue_record_job(self.prefix, job_id, micro, kind=kind, strategy=strategy, outcome=outcome)

    def record_failed_job(
        self, job_id: str, error: BaseException, *, kind: str = "extract", strategy: str | None = None
    ) -> None:
        """Count a failed job once, with what the attempts its error lists cost."""
        self.record_job(
            job_id,
            error.attempts if isinstance(error, QuorumError) else [],
            kind=kind,
            strategy=strategy,
            outcome="failed",
        )

    def post_call(self, *, defer: bool = False, closed_at: float | None = None) -> PostCall:
        """An attempt's breaker gate and post-call recorder (``defer``, ``closed_at``: see
        :class:`PostCall`)."""
        return PostCall(self.fast_redis, self.prefix, self.breaker, defer=defer, closed_at=closed_at)

    def attempt(
        self,
        candidate: Candidate,
        invoke: Invoke,
        *,
        label: str,
        task_id: str | None,
        deadline: float,
        post: PostCall | None = None,
    ) -> Attempt:
        """Run one provider attempt with this process's dependencies (``post``: its recorder)."""
        post = post or self.post_call()
        deps = AttemptDeps(
            settings=self.settings,
            provider=self.providers.get,
            gates=[*self.gates, post.gate()],
            recorder=post,
        )
        return run_attempt(candidate, invoke, label=label, task_id=task_id, deadline=deadline, deps=deps)


def build_runtime(settings: Settings) -> Runtime:
    """Wire a runtime from settings and the process environment (API keys stay in env)."""
    urls = broker_urls(settings)
    if urls is None:
        raise unconfigured_error()
    url = settings.redis_url or urls[1]
    fast = fast_fail_client(url)  # breaker and health: degrade in ~0.5 s, never stall a call
    breaker = ResilientBreaker(fast, settings.key_prefix, settings.breaker)
    rt = Runtime(
        settings=settings,
        redis=state_client(url),
        fast_redis=fast,
        providers=ProviderRegistry(
            settings, env=os.environ, modes=RedisModeMemory(fast, settings.key_prefix)
        ),
        breaker=breaker,
        budget=BudgetGate(fast, settings.key_prefix, settings),
        limits=RateLimitGate(fast, settings.key_prefix, settings),
        quality=QualityGate(fast, settings.key_prefix, settings.breaker),
        state_on_backend=url == urls[1],
        broker_on_state=url == urls[0],
    )
    # Cheap refusals first: a spent budget or an empty bucket must not take the breaker's probe
    # (the breaker's gate comes last, one per attempt: see PostCall).
    rt.gates = [rt.budget, rt.quality, rt.limits]
    return rt


_lock = threading.Lock()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    """This process's runtime, built on first use."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = build_runtime(app.conf.quorum_settings)
    return _runtime


@task_failure.connect
def _count_failed_job(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None,
                      **_: Any) -> None:  # fmt: skip
    """Count a job that failed by raising (a chord that could not merge, no provider to try...)
    once, like an answered one, so ``quorum status`` counts every job; a request refused as
    invalid never became a job and is not counted."""
    if getattr(sender, "name", None) not in JOB_TASKS or not task_id or exception is None:
        return
    if isinstance(exception, InvalidRequestError):
        return
    try:
        kind = str(sender.name).removeprefix("quorum.")  # type: ignore[union-attr]
        runtime().record_failed_job(task_id, exception, kind=kind)
    except Exception:  # bookkeeping must never disturb Celery's failure handling
        log.warning("job %s: could not count its failure", task_id, exc_info=True)
