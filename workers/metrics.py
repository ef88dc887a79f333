"""``quorum metrics``: one Prometheus exporter for the whole fleet, reading Redis on each scrape.

A custom ``prometheus_client`` Collector reads the same records as ``quorum status --detailed``
(through :func:`orchestration.status.fleet_status`, so the two always agree) plus the
latency samples, rate-limit buckets and job outcome counters, at scrape time: no background
polling, nothing cached between scrapes. When Redis cannot be read, ``quorum_up`` is 0.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import redis as redis_lib
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from orchestration.config import Settings
from orchestration.state import ProviderKeys, jobs_by_class, provider_key
from orchestration.state.scripts import text
from orchestration.status import FleetStatus, fleet_status

log = logging.getLogger("quorum.metrics")

#: ``quorum_breaker_state`` values.
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
#: Quantiles of the recent-latency gauge (nearest rank, as ``quorum status`` computes p95).
QUANTILES = (0.5, 0.95, 0.99)


def quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted, non-empty samples."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def headroom(fields: dict[Any, Any], limit: int, now: float) -> float:
    """Tokens left in a rate-limit bucket now (a missing bucket is full), as the Lua refills it."""
    h = {text(k): text(v) for k, v in fields.items()}
    if not h.get("tokens") or not h.get("ts"):
        return float(limit)
    tokens, ts = float(h["tokens"]), float(h["ts"])
    if now > ts:
        tokens += (now - ts) * limit / 60
    return min(float(limit), tokens)


class FleetCollector(Collector):
    """Reads the fleet's shared state from Redis at each scrape and yields it as metrics."""

    def __init__(self, redis: redis_lib.Redis, settings: Settings) -> None:
        self.redis, self.settings = redis, settings

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("quorum_up", "1 when the fleet's Redis was read for this scrape, else 0")
        try:
            families = list(self._families(time.time()))
        except redis_lib.RedisError as e:
            log.warning("scrape: Redis unreachable: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _extra(
        self, names: list[str], now: float
    ) -> tuple[dict[str, list[float]], dict[tuple[str, str], float]]:
        """Latency samples per provider and rate-limit headroom per (provider, limit)."""
        pipe = self.redis.pipeline(transaction=False)
        buckets: list[tuple[str, str, int]] = []
        for name in names:
            pipe.lrange(ProviderKeys.of(self.settings.key_prefix, name).latency, 0, -1)
        for name in names:
            cfg = self.settings.providers[name]
            for limit_name, limit in (("rpm", cfg.rpm), ("tpm", cfg.tpm)):
                if limit:
                    pipe.hgetall(provider_key(self.settings.key_prefix, name, f"ratelimit:{limit_name}"))
                    buckets.append((name, limit_name, limit))
        replies = pipe.execute()
        samples = {name: sorted(float(text(x)) for x in replies[i]) for i, name in enumerate(names)}
        rooms = {
            (name, limit_name): headroom(replies[len(names) + i], limit, now)
            for i, (name, limit_name, limit) in enumerate(buckets)
        }
        return samples, rooms

    def _families(self, now: float) -> Iterator[Metric]:
        report: FleetStatus = fleet_status(self.redis, self.settings, now, detailed=True)
        names = [p.provider for p in report.providers]
        samples, rooms = self._extra(names, now)
        p = ["provider"]
        state = GaugeMetricFamily(
            "quorum_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", labels=p
        )
        healthy = GaugeMetricFamily(
            "quorum_provider_healthy", "1 when jobs may use the provider now", labels=p
        )
        enabled = GaugeMetricFamily("quorum_provider_enabled", "1 when enabled in the config", labels=p)
        calls = CounterMetricFamily("quorum_provider_calls", "Provider calls recorded in health", labels=p)
        successes = CounterMetricFamily("quorum_provider_successes", "Successful provider calls", labels=p)
        errors = CounterMetricFamily(
            "quorum_provider_errors", "Failed provider calls by error class", labels=["provider", "error"]
        )
        ewma = GaugeMetricFamily("quorum_provider_latency_ewma_seconds", "EWMA of successful calls", labels=p)
        recent = GaugeMetricFamily(
            "quorum_provider_latency_seconds",
            "Latency quantiles over the most recent successful calls (the health sample window)",
            labels=["provider", "quantile"],
        )
        last_ok = GaugeMetricFamily(
            "quorum_provider_last_success_timestamp_seconds", "Last success", labels=p
        )
        last_bad = GaugeMetricFamily(
            "quorum_provider_last_failure_timestamp_seconds", "Last failure", labels=p
        )
        tokens = CounterMetricFamily(
            "quorum_provider_tokens", "Tokens used (cost ledger)", labels=["provider", "direction"]
        )
        cost = CounterMetricFamily("quorum_provider_cost_usd", "Cost in USD (cost ledger)", labels=p)
        spent = GaugeMetricFamily("quorum_provider_spent_today_usd", "USD spent this UTC day", labels=p)
        budget = GaugeMetricFamily(
            "quorum_provider_budget_remaining_usd",
            "Daily budget left this UTC day (budgeted providers)",
            labels=p,
        )
        room = GaugeMetricFamily(
            "quorum_provider_ratelimit_headroom",
            "Tokens left in the fleet-wide rate-limit bucket (rpm: requests, tpm: tokens)",
            labels=["provider", "limit"],
        )
        for row in report.providers:
            name = row.provider
            state.add_metric([name], BREAKER_STATES[row.state])
            healthy.add_metric([name], float(row.healthy))
            enabled.add_metric([name], float(row.enabled))
            calls.add_metric([name], row.calls)
            successes.add_metric([name], row.successes)
            for kind, count in sorted(row.errors.items()):
                errors.add_metric([name, kind], count)
            if row.latency_ewma_ms is not None:
                ewma.add_metric([name], row.latency_ewma_ms / 1000)
            if samples[name]:
                for q in QUANTILES:
                    recent.add_metric([name, str(q)], quantile(samples[name], q) / 1000)
            if row.last_success_at is not None:
                last_ok.add_metric([name], row.last_success_at)
            if row.last_failure_at is not None:
                last_bad.add_metric([name], row.last_failure_at)
            tokens.add_metric([name, "in"], row.tokens_in)
            tokens.add_metric([name, "out"], row.tokens_out)
            cost.add_metric([name], row.cost_usd)
            spent.add_metric([name], row.spent_today_usd)
            if row.daily_budget_usd is not None:
                budget.add_metric([name], max(0.0, row.daily_budget_usd - row.spent_today_usd))
        for (name, limit_name), left in sorted(rooms.items()):
            room.add_metric([name, limit_name], left)
        yield from (state, healthy, enabled, calls, successes, errors, ewma, recent, last_ok, last_bad)
        yield from (tokens, cost, spent, budget, room)
        yield from self._fleet(report)

    def _fleet(self, report: FleetStatus) -> Iterator[Metric]:
        hits = CounterMetricFamily("quorum_cache_hits", "Result cache hits")
        hits.add_metric([], report.cache_hits)
        misses = CounterMetricFamily("quorum_cache_misses", "Result cache misses")
        misses.add_metric([], report.cache_misses)
        recorded = CounterMetricFamily(
            "quorum_jobs_recorded", "Finished jobs counted for cost (status' jobs)"
        )
        recorded.add_metric([], report.jobs)
        job_cost = CounterMetricFamily("quorum_jobs_cost_usd", "Total cost of the recorded jobs in USD")
        job_cost.add_metric([], report.cost_usd)
        jobs = CounterMetricFamily(
            "quorum_jobs", "Jobs by kind, strategy and outcome", labels=["kind", "strategy", "outcome"]
        )
        for labels, count in sorted(jobs_by_class(self.redis, self.settings.key_prefix).items()):
            jobs.add_metric(list(labels), count)
        strategy = GaugeMetricFamily(
            "quorum_fleet_strategy", "The active fleet strategy (1)", labels=["strategy"]
        )
        strategy.add_metric([report.strategy], 1)
        yield from (hits, misses, recorded, job_cost, jobs, strategy)


def registry_for(redis: redis_lib.Redis, settings: Settings) -> CollectorRegistry:
    """A registry holding only the fleet collector (no process metrics of the exporter itself)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(redis, settings))
    return registry
