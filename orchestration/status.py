"""What ``quorum status`` shows, read from Redis alone in a few pipelined round trips:
per provider breaker, health, errors, invalid-output rate (answer quality), latency, budget,
tokens and cost; fleet-wide strategy, provider order, cache hit rate and average cost per job."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from redis import Redis

from orchestration.breaker.breakers import RedisBreaker
from orchestration.config import Settings
from orchestration.models import ProviderHealth
from orchestration.state.budget import budget_status, refusal_text
from orchestration.state.cache import hit_rate
from orchestration.state.costs import job_stats, totals
from orchestration.state.fleet import read_fleet
from orchestration.state.health import read_all
from orchestration.state.quality import QualityGate


class ProviderStatus(ProviderHealth):
    """One provider's line: health plus why it is (not) used, and what it cost."""

    enabled: bool = True
    model: str = ""
    cooldown_until: float | None = None
    consecutive_failures: int = 0
    spent_today_usd: float = 0.0
    daily_budget_usd: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


class FleetStatus(BaseModel):
    """The whole status report (``quorum status --json``)."""

    generated_at: float
    strategy: str
    order: list[str]
    providers: list[ProviderStatus]
    detailed: bool = False
    jobs: int = 0
    cost_usd: float = 0.0
    avg_cost_per_job_usd: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    notes: list[str] = Field(default_factory=list)

    @property
    def cache_hit_rate(self) -> float | None:
        looked = self.cache_hits + self.cache_misses
        return None if not looked else self.cache_hits / looked


def _why_not(status: ProviderStatus, breaker_reason: str | None, budget_reason: str | None) -> str | None:
    if not status.enabled:
        return "disabled in the config"
    if budget_reason:
        return budget_reason
    if status.state != "closed":
        return breaker_reason or f"circuit breaker {status.state.replace('_', '-')}"
    return None


def fleet_status(redis: Redis, settings: Settings, now: float, *, detailed: bool = False) -> FleetStatus:
    """Gather the report; every provider in the config is listed, enabled or not."""
    names = list(settings.providers)
    prefix = settings.key_prefix
    breaker = RedisBreaker(redis, prefix, settings.breaker)
    quality = QualityGate(redis, prefix, settings.breaker)
    snaps = breaker.states(names, now)
    health = read_all(redis, prefix, names, snaps)
    budgets = budget_status(redis, prefix, settings, now)
    fleet = read_fleet(redis, prefix)
    spend = totals(redis, prefix, names) if detailed else {}
    rows = []
    for name in names:
        cfg = settings.providers[name]
        snap = snaps[name]
        row = ProviderStatus(
            **health[name].model_dump(),
            enabled=cfg.enabled,
            model=cfg.model,
            cooldown_until=snap.cooldown_until,
            consecutive_failures=snap.consecutive_failures,
        )
        budget = budgets.get(name)
        budget_reason = None
        if budget is not None:
            row.spent_today_usd, row.daily_budget_usd = budget.spent_usd, budget.budget_usd
            if budget.exhausted and budget.budget_usd is not None:
                budget_reason = refusal_text(budget.budget_usd, round(budget.spent_usd * 1_000_000))
        breaker_reason = breaker.refusal(name, now)
        row.reason = _why_not(row, breaker_reason, budget_reason or quality.refusal(name, now))
        row.healthy = row.reason is None
        if name in spend:
            t = spend[name]
            row.tokens_in, row.tokens_out, row.cost_usd = t.tokens_in, t.tokens_out, t.usd
        rows.append(row)
    report = FleetStatus(
        generated_at=now,
        strategy=fleet.strategy or settings.orchestration.strategy,
        order=[p for p in (fleet.order or settings.enabled_providers())],
        providers=rows,
        detailed=detailed,
    )
    if detailed:
        jobs, micro, average = job_stats(redis, prefix)
        report.jobs, report.cost_usd, report.avg_cost_per_job_usd = jobs, micro / 1_000_000, average
        report.cache_hits, report.cache_misses = hit_rate(redis, prefix)
    return report


def as_json(report: FleetStatus) -> dict[str, Any]:
    """The report as plain JSON, with the derived figures included."""
    data = report.model_dump(mode="json")
    data["cache_hit_rate"] = report.cache_hit_rate
    for row, model in zip(data["providers"], report.providers, strict=True):
        row["success_rate"] = model.success_rate
        row["invalid_rate"] = model.invalid_rate
    return data
