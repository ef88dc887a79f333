"""Provider health in Redis: counters, errors by class, latency EWMA and p95, last outcomes.

Per provider, a hash ``{prefix}{provider}:health`` (``calls``, ``successes``, ``error:<Kind>``,
``invalid_outputs``, ``request:<Kind>``, ``latency_ewma_ms``, ``last_success_at``,
``last_failure_at``, ``last_error``, ``last_error_kind``, ``last_invalid_at``, ``last_invalid``)
and a capped list ``{prefix}{provider}:health:latency`` of the newest ``LATENCY_SAMPLES``
latencies of answered calls; p95 is computed on read (sorting 200 floats takes microseconds).
Each record is one atomic Lua call; reading every provider takes one pipelined round trip.

Each outcome is filed by who it blames (:func:`orchestration.errors.blame_of`): provider faults
are ``error:<Kind>``; unusable answers (``InvalidOutputError``) are the quality figure
``invalid_outputs``, not errors; request faults (the job's schema or parameters) go to
``request:<Kind>`` only, outside ``calls`` and every rate; skips and deadline cuts are not
recorded at all.

Redis clients may use ``decode_responses`` True or False: values are normalised on read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestration.breaker.machine import BreakerSnapshot, BreakerState, error_kind_of
from orchestration.errors import blame_of
from orchestration.models import ProviderHealth
from orchestration.state.keys import ProviderKeys, provider_key
from orchestration.state.scripts import ScriptCall, float_arg, opt_float, run_batch, text

log = logging.getLogger("quorum.health")

#: Weight of the newest latency in the EWMA.
EWMA_ALPHA = 0.2
#: How many recent latencies the p95 is computed over.
LATENCY_SAMPLES = 200
#: Longest stored error message (characters).
MAX_MESSAGE_CHARS = 300

BreakerInfo = BreakerSnapshot | BreakerState | str | None
#: Width of a quality bucket (answers and invalid answers per provider and minute), seconds.
QUALITY_BUCKET_S = 60
#: How long a quality bucket lives: beyond the longest quality window.
QUALITY_BUCKET_TTL_S = 3600 + 2 * QUALITY_BUCKET_S


def quality_bucket(prefix: str, provider: str, now: float) -> str:
    """The quality bucket of ``provider`` for the minute holding ``now``."""
    return provider_key(prefix, provider, f"health:quality:{int(now // QUALITY_BUCKET_S)}")


def outcome_of(error_kind: str | None) -> str | None:
    """The health script's outcome for a call (``ok``, ``fault``, ``invalid``, ``request``);
    None when the outcome blames nobody and is not recorded (a skip, the job's deadline)."""
    if error_kind is None:
        return "ok"
    blame = blame_of(error_kind)
    return {"provider": "fault", "quality": "invalid", "request": "request"}.get(blame)


def _record(
    redis: Redis,
    prefix: str,
    provider: str,
    now: float,
    outcome: str,
    latency_ms: float | None,
    kind: str = "",
    message: str = "",
) -> None:
    """Run the health script once: one atomic update per finished call."""
    run_batch(redis, [_call(prefix, provider, now, outcome, latency_ms, kind, message)])


def _call(
    prefix: str,
    provider: str,
    now: float,
    outcome: str,
    latency_ms: float | None,
    kind: str = "",
    message: str = "",
) -> ScriptCall:
    """The health script's run for one finished call."""
    keys = [*ProviderKeys.of(prefix, provider).health_keys, quality_bucket(prefix, provider, now)]
    args = [
        float_arg(now),
        outcome,
        float_arg(latency_ms) if latency_ms is not None else "",
        kind,
        message[:MAX_MESSAGE_CHARS],
        float_arg(EWMA_ALPHA),
        str(LATENCY_SAMPLES),
        str(QUALITY_BUCKET_TTL_S),
    ]
    return ScriptCall("health.lua", keys, args)


def record_success(
    redis: Redis, prefix: str, provider: str, now: float, latency_ms: float | None = None
) -> None:
    """Count one successful call and its latency."""
    _record(redis, prefix, provider, now, "ok", latency_ms)


def record_failure(
    redis: Redis,
    prefix: str,
    provider: str,
    now: float,
    error: str | BaseException,
    message: str | None = None,
    latency_ms: float | None = None,
) -> None:
    """Count one failed call by error kind (class name), filed by who it blames (a request
    fault apart, an invalid output as quality); keeps the message (300 chars max)."""
    if message is None:
        message = "" if isinstance(error, str) else str(error)
    kind = error_kind_of(error)
    outcome = outcome_of(kind)
    if outcome is not None:
        _record(redis, prefix, provider, now, outcome, latency_ms, kind, message)


def record_call(
    redis: Redis,
    prefix: str,
    provider: str,
    *,
    ok: bool,
    now: float,
    latency_ms: float | None = None,
    error_kind: str | None = None,
    message: str | None = None,
) -> bool:
    """Record one finished call, best effort: False (and no error) when Redis is unreachable.

    Latency counts for answers only (successes and invalid outputs): a failure's duration (a
    timeout, say) is not a latency. Health is telemetry, so a Redis outage must not fail the
    provider call that reports it.
    """
    call = call_record(prefix, provider, ok=ok, now=now, latency_ms=latency_ms, error_kind=error_kind,
                       message=message)  # fmt: skip
    try:
        if call is not None:
            run_batch(redis, [call])
    except (RedisConnectionError, RedisTimeoutError) as e:
        log.debug("health of %s not recorded: Redis unreachable (%s)", provider, e)
        return False
    return True


def call_record(
    prefix: str,
    provider: str,
    *,
    ok: bool,
    now: float,
    latency_ms: float | None = None,
    error_kind: str | None = None,
    message: str | None = None,
) -> ScriptCall | None:
    """The health script's run that :func:`record_call` sends, to batch it with the provider's
    other post-call records; None when the outcome blames nobody and is not recorded."""
    if ok:
        return _call(prefix, provider, now, "ok", latency_ms)
    kind = error_kind_of(error_kind or "QuorumError")
    outcome = outcome_of(kind)
    if outcome is None:
        return None
    answered = latency_ms if outcome == "invalid" else None
    return _call(prefix, provider, now, outcome, answered, kind, message or "")


def clear_health(redis: Redis, prefix: str, provider: str) -> None:
    """Forget one provider's health figures."""
    keys = ProviderKeys.of(prefix, provider)
    redis.delete(*keys.health_keys)


def p95(samples: Iterable[float]) -> float | None:
    """Nearest-rank 95th percentile (None for no samples)."""
    ordered = sorted(samples)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _breaker_fields(info: BreakerInfo) -> dict[str, Any]:
    """``state``/``healthy``/``reason`` of a ProviderHealth from whatever breaker info we got."""
    if info is None:
        return {}
    if isinstance(info, BreakerSnapshot):
        state, reason = info.state, info.reason
    else:
        state, reason = BreakerState(info), None
    if state is BreakerState.CLOSED:
        return {"state": state.value, "healthy": True}
    why = f"breaker {state.value}" + (f": {reason}" if reason else "")
    return {"state": state.value, "healthy": False, "reason": why}


def health_from(
    provider: str, fields: Mapping[Any, Any], latencies: Iterable[Any], breaker: BreakerInfo = None
) -> ProviderHealth:
    """Build a :class:`ProviderHealth` from the raw hash and latency list."""
    h = {text(k): text(v) for k, v in fields.items()}
    errors = {k.removeprefix("error:"): int(v) for k, v in h.items() if k.startswith("error:")}
    rejected = {k.removeprefix("request:"): int(v) for k, v in h.items() if k.startswith("request:")}
    return ProviderHealth(
        provider=provider,
        calls=int(h.get("calls") or 0),
        successes=int(h.get("successes") or 0),
        errors=errors,
        invalid_outputs=int(h.get("invalid_outputs") or 0),
        request_errors=rejected,
        last_invalid_at=opt_float(h.get("last_invalid_at")),
        last_invalid=h.get("last_invalid") or None,
        latency_ewma_ms=opt_float(h.get("latency_ewma_ms")),
        latency_p95_ms=p95(float(text(x)) for x in latencies),
        last_success_at=opt_float(h.get("last_success_at")),
        last_failure_at=opt_float(h.get("last_failure_at")),
        last_error=h.get("last_error") or None,
        **_breaker_fields(breaker),
    )


def read_all(
    redis: Redis,
    prefix: str,
    providers: Iterable[str],
    breaker_states: Mapping[str, BreakerInfo] | None = None,
) -> dict[str, ProviderHealth]:
    """Health of several providers in one pipelined round trip (the status CLI's read)."""
    names = list(providers)
    pipe = redis.pipeline(transaction=False)
    for name in names:
        keys = ProviderKeys.of(prefix, name)
        pipe.hgetall(keys.health)
        pipe.lrange(keys.latency, 0, -1)
    replies = pipe.execute()
    states = breaker_states or {}
    return {
        name: health_from(name, replies[2 * i], replies[2 * i + 1], states.get(name))
        for i, name in enumerate(names)
    }


def read_health(
    redis: Redis, prefix: str, provider: str, breaker_state: BreakerInfo = None
) -> ProviderHealth:
    """Health of one provider; ``breaker_state`` fills ``state``/``healthy``/``reason``."""
    return read_all(redis, prefix, [provider], {provider: breaker_state})[provider]
