"""Per-process dependencies of the tasks (settings, Redis, providers, breaker, recorders),
built once per worker process on first use and handed to domain code as arguments."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib

from orchestration.attempts import AttemptDeps, Gate, Invoke, Ticket, run_attempt
from orchestration.config import Settings
from orchestration.models import Attempt, Candidate
from orchestration.providers.registry import ProviderRegistry
from orchestration.state.fleet import FleetSetting, read_fleet
from orchestration.state.health import record_call
from orchestration.state.resilient import ResilientBreaker, fast_fail_client
from workers.app import app, broker_urls, unconfigured_error

log = logging.getLogger("quorum.runtime")

REDIS_ERRORS = (redis_lib.ConnectionError, redis_lib.TimeoutError)


def state_client(url: str) -> redis_lib.Redis:
    """A Redis client for job coordination (publication guard, chord answers): retries blips."""
    return redis_lib.Redis.from_url(
        url, socket_timeout=5.0, socket_connect_timeout=5.0, health_check_interval=10
    )


@dataclass
class _BreakerTicket:
    breaker: ResilientBreaker
    provider: str
    permit: Any

    def done(self, now: float, error_kind: str | None, tokens: int) -> None:
        if error_kind is None:
            self.breaker.record_success(self.provider, now, self.permit)
        else:
            self.breaker.record_failure(self.provider, now, error_kind, self.permit)


@dataclass
class BreakerGate:
    """The circuit breaker as a gate: open → skipped without an HTTP call."""

    breaker: ResilientBreaker

    def admit(self, provider: str, now: float) -> Ticket | str:
        permit = self.breaker.acquire(provider, now)
        if not permit.allowed:
            return permit.reason or "circuit breaker open"
        return _BreakerTicket(self.breaker, provider, permit)


@dataclass
class HealthRecorder:
    """Writes each finished call into the provider's health figures."""

    redis: redis_lib.Redis
    prefix: str

    def record(self, attempt: Attempt, now: float, micro_usd: int) -> None:
        if attempt.skipped:
            return
        error = attempt.error or {}
        record_call(
            self.redis,
            self.prefix,
            attempt.provider,
            ok=attempt.ok,
            latency_ms=attempt.latency_ms,
            error_kind=error.get("type"),
            message=error.get("message"),
            now=now,
        )


@dataclass
class Runtime:
    """Everything a task needs, shared by the threads of one worker process."""

    settings: Settings
    redis: redis_lib.Redis
    fast_redis: redis_lib.Redis
    providers: ProviderRegistry
    breaker: ResilientBreaker
    gates: list[Gate] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.settings.key_prefix

    def fleet(self) -> FleetSetting:
        """The fleet-wide strategy setting; the config's when Redis cannot say."""
        try:
            return read_fleet(self.redis, self.prefix)
        except REDIS_ERRORS:
            log.warning("Redis unreachable: using the configured strategy and order")
            return FleetSetting()

    def unavailable(self, provider: str, now: float) -> str | None:
        """Why ``provider`` should be skipped right now (no state change), or None."""
        return self.breaker.refusal(provider, now)

    def attempt(
        self, candidate: Candidate, invoke: Invoke, *, label: str, task_id: str | None, deadline: float
    ) -> Attempt:
        """Run one provider attempt with this process's dependencies."""
        deps = AttemptDeps(
            settings=self.settings,
            provider=self.providers.get,
            gates=self.gates,
            recorder=HealthRecorder(self.fast_redis, self.prefix),
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
        providers=ProviderRegistry(settings, env=os.environ),
        breaker=breaker,
    )
    rt.gates = [BreakerGate(breaker)]
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
