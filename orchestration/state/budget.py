"""Daily budgets: a provider whose spend today (UTC, from the cost ledger) reached its
``daily_budget_usd`` is skipped until the next UTC day.

The gate only reads: the ledger (:mod:`orchestration.state.costs`) records the spend after each
call, so the ticket has nothing to do. Calls admitted while the budget still had room may
overshoot it by what they cost (a call's price is only known once it returns).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

from redis import Redis

from orchestration.config import Settings
from orchestration.state.costs import DAY_TOTAL, day_key, spent_today, utc_day
from orchestration.state.ratelimit import NO_TICKET, REDIS_ERRORS, OutageLog
from orchestration.state.scripts import text

if TYPE_CHECKING:
    from orchestration.attempts import Ticket

log = logging.getLogger("quorum.budget")

_MICRO = 1_000_000


class BudgetStatus(NamedTuple):
    """One provider's spend today and its budget, for ``quorum status``."""

    spent_usd: float
    budget_usd: float | None
    exhausted: bool


def _budget_micro(budget_usd: float) -> int:
    """A USD budget in integer micro-USD (the ledger's unit)."""
    return round(budget_usd * _MICRO)


def refusal_text(budget_usd: float, spent_micro: int) -> str:
    """The skip reason, e.g. ``daily budget $5.00 spent ($5.0123 today)``."""
    return f"daily budget ${budget_usd:.2f} spent (${spent_micro / _MICRO:.4f} today)"


class BudgetGate:
    """Daily budgets as a :class:`~orchestration.attempts.Gate`: one HGET per budgeted call.

    Fails open like the rate limits: without Redis the spend cannot be read, and skipping every
    budgeted provider would turn a Redis outage into a job outage (one WARNING per outage).
    """

    def __init__(self, redis: Redis, prefix: str, settings: Settings) -> None:
        self.redis = redis
        self.prefix = prefix
        self.settings = settings
        self._outage = OutageLog(log, "daily budgets")

    def budget(self, provider: str) -> float | None:
        """``provider``'s daily budget in USD (None: unlimited, or no such provider)."""
        cfg = self.settings.providers.get(provider)
        return None if cfg is None else cfg.daily_budget_usd

    def _check(self, provider: str, now: float) -> str | None:
        """The refusal reason from today's spend, or None; raises on Redis errors."""
        budget = self.budget(provider)
        if budget is None:
            return None
        spent = spent_today(self.redis, self.prefix, provider, now)
        return refusal_text(budget, spent) if spent >= _budget_micro(budget) else None

    def admit(self, provider: str, now: float) -> Ticket | str:
        """A no-op ticket while today's spend is under budget, else the reason (no-budget: no I/O)."""
        try:
            reason = self._check(provider, now)
        except REDIS_ERRORS as e:
            self._outage.failed(e)
            return NO_TICKET
        if self.budget(provider) is not None:
            self._outage.ok()
        return NO_TICKET if reason is None else reason

    def refusal(self, provider: str, now: float) -> str | None:
        """Why :meth:`admit` would refuse ``provider`` now (None: worth trying); read-only."""
        try:
            return self._check(provider, now)
        except REDIS_ERRORS:
            return None


def budget_status(redis: Redis, prefix: str, settings: Settings, now: float) -> dict[str, BudgetStatus]:
    """Spend today, budget and exhaustion of every configured provider (one pipelined round trip)."""
    names = list(settings.providers)
    day = utc_day(now)
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hget(day_key(prefix, name, day), DAY_TOTAL)
    out: dict[str, BudgetStatus] = {}
    for name, raw in zip(names, pipe.execute(), strict=True):
        spent = int(text(raw) or 0)
        budget = settings.providers[name].daily_budget_usd
        exhausted = budget is not None and spent >= _budget_micro(budget)
        out[name] = BudgetStatus(spent / _MICRO, budget, exhausted)
    return out
