"""Fleet-wide rate limits: per-provider requests/minute and tokens/minute token buckets in Redis.

Each provider with ``rpm`` and/or ``tpm`` has buckets ``{prefix}{provider}:ratelimit:rpm`` and
``{prefix}{provider}:ratelimit:tpm`` (hashes ``tokens``, ``ts``; same hash tag). Capacity is
the limit, refill limit/60 per second, a missing bucket is full, and every step is one atomic
run of ``lua/ratelimit.lua`` with ``now`` passed in. Admitting takes one request token and
needs the TPM bucket positive (a call's tokens are only known afterwards); the ticket then
debits the tokens actually used, which may drive the bucket negative until it refills.

Redis clients may use ``decode_responses`` True or False: replies are normalised on read.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestration.config import Settings
from orchestration.state.keys import provider_key
from orchestration.state.scripts import float_arg, lua_source, text

if TYPE_CHECKING:
    from orchestration.attempts import Ticket

log = logging.getLogger("quorum.ratelimit")

#: Errors that mean "Redis is unreachable": the gates fail open on these (others propagate).
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
#: The error kind of a call that was never sent (another gate refused): its request is given back.
_NOT_SENT = "ProviderUnavailableError"


class _NoTicket:
    """The ticket of a gate with nothing to track: ``done`` does nothing."""

    def done(self, now: float, error_kind: str | None, tokens: int) -> None:
        """Nothing to report back."""


NO_TICKET = _NoTicket()


class OutageLog:
    """One WARNING when Redis becomes unreachable, one INFO when it answers again (not per call)."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log, self._what = logger, what
        self._down = False
        self._lock = threading.Lock()

    def failed(self, error: Exception) -> None:
        """Redis just failed: warn if it was fine until now."""
        with self._lock:
            first, self._down = not self._down, True
        if first:
            self._log.warning("Redis unreachable: %s not enforced until it is back (%s)", self._what, error)

    def ok(self) -> None:
        """Redis just answered: say so if it had been unreachable."""
        if self._down:
            with self._lock:
                was, self._down = self._down, False
            if was:
                self._log.info("Redis reachable again: %s enforced again", self._what)


@dataclass
class _LimitTicket:
    """Reports a call's real token usage (and gives back the request of a call never sent)."""

    gate: RateLimitGate
    provider: str
    took_request: bool

    def done(self, now: float, error_kind: str | None, tokens: int) -> None:
        """Debit ``tokens`` from the TPM bucket; best effort (a lost debit only loosens the limit)."""
        give_back = 1 if self.took_request and error_kind == _NOT_SENT else 0
        try:
            self.gate.settle(self.provider, now, give_back=give_back, tokens=tokens)
        except REDIS_ERRORS as e:
            log.debug("rate limit of %s not settled: Redis unreachable (%s)", self.provider, e)


class RateLimitGate:
    """The RPM/TPM buckets as a :class:`~orchestration.attempts.Gate`, failing open without Redis.

    When Redis is unreachable, ``admit`` lets the call through and logs one WARNING for the
    outage: refusing every call would turn a Redis blip into a fleet-wide outage of every
    rate-limited provider, while the provider's own 429 (mapped to ``RateLimitedError``, which
    the failover planner handles) still protects the quota. Availability over strict limits.
    """

    def __init__(self, redis: Redis, prefix: str, settings: Settings) -> None:
        self.redis = redis
        self.prefix = prefix
        self.settings = settings
        self._script = redis.register_script(lua_source("ratelimit.lua"))
        self._outage = OutageLog(log, "rate limits")

    def keys(self, provider: str) -> list[str]:
        """The RPM and TPM bucket keys of ``provider`` (KEYS of the script, one slot)."""
        return [provider_key(self.prefix, provider, f"ratelimit:{w}") for w in ("rpm", "tpm")]

    def limits(self, provider: str) -> tuple[int | None, int | None]:
        """``(rpm, tpm)`` of ``provider`` (None: no such limit, or no such provider)."""
        cfg = self.settings.providers.get(provider)
        return (None, None) if cfg is None else (cfg.rpm, cfg.tpm)

    def _run(
        self, op: str, provider: str, now: float, give_back: int = 0, tokens: int = 0
    ) -> tuple[str, float | None]:
        """One atomic bucket step: ``(decision, wait_s)``, decision ``ok``, ``rpm`` or ``tpm``."""
        rpm, tpm = self.limits(provider)
        args = [op, float_arg(now), rpm or "", tpm or "", give_back, max(0, int(tokens))]
        decision, wait = self._script(keys=self.keys(provider), args=args)
        return text(decision), float(text(wait)) if text(wait) else None

    def _reason(self, provider: str, decision: str, wait: float | None) -> str:
        rpm, tpm = self.limits(provider)
        what = f"{rpm} requests/min" if decision == "rpm" else f"{tpm} tokens/min"
        return f"rate limit: {what} exhausted, next slot in {wait or 0.0:.1f} s"

    def admit(self, provider: str, now: float) -> Ticket | str:
        """Take one request slot: a ticket, or why not (zero Redis calls for unlimited providers)."""
        rpm, tpm = self.limits(provider)
        if rpm is None and tpm is None:
            return NO_TICKET
        try:
            decision, wait = self._run("admit", provider, now)
        except REDIS_ERRORS as e:
            self._outage.failed(e)
            return _LimitTicket(self, provider, took_request=False)
        self._outage.ok()
        if decision != "ok":
            return self._reason(provider, decision, wait)
        return _LimitTicket(self, provider, took_request=rpm is not None)

    def refusal(self, provider: str, now: float) -> str | None:
        """Why :meth:`admit` would refuse ``provider`` now, read-only (None: worth trying)."""
        rpm, tpm = self.limits(provider)
        if rpm is None and tpm is None:
            return None
        try:
            decision, wait = self._run("peek", provider, now)
        except REDIS_ERRORS:
            return None  # fail open, as admit does
        return None if decision == "ok" else self._reason(provider, decision, wait)

    def settle(self, provider: str, now: float, *, give_back: int = 0, tokens: int = 0) -> None:
        """Debit ``tokens`` used from TPM and give back ``give_back`` unused requests to RPM."""
        rpm, tpm = self.limits(provider)
        if (rpm is None or give_back <= 0) and (tpm is None or tokens <= 0):
            return
        self._run("settle", provider, now, give_back=give_back, tokens=tokens)

    def reset(self, provider: str) -> None:
        """Refill both buckets of ``provider`` (ops and tests)."""
        self.redis.delete(*self.keys(provider))
