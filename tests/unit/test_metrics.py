"""``quorum metrics``: the collector reads Redis at each scrape and agrees with ``quorum status``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestration.breaker import RedisBreaker
from orchestration.config import Settings, default_providers, load_settings
from orchestration.state import cache, record_call, record_cost, record_job
from orchestration.state.scripts import execute_queued
from orchestration.status import fleet_status
from workers.metrics import registry_for


def scrape(registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of one scrape, through the text format."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_agree_with_status_and_follow_redis_at_each_scrape(valkey_redis):
    providers = default_providers()
    providers["openai"] = providers["openai"].model_copy(update={"daily_budget_usd": 1.0, "rpm": 60})
    settings = Settings(providers=providers)
    r, prefix, now = valkey_redis, "quorum:", time.time()
    registry = registry_for(r, settings)
    assert scrape(registry)[("quorum_up", ())] == 1.0
    for ms in (100.0, 200.0, 300.0):
        record_call(r, prefix, "openai", ok=True, now=now, latency_ms=ms)
    record_call(r, prefix, "claude", ok=False, now=now, error_kind="ServerError", message="HTTP 500")
    record_cost(r, prefix, attempt_id="a1", provider="openai", model="m", tokens_in=100, tokens_out=20,
                micro_usd=250_000, now=now)  # fmt: skip
    record_job(r, prefix, "j1", 250_000, strategy="failover", outcome="ok")
    record_job(r, prefix, "j2", 0, strategy="consensus", outcome="failed")
    missed = cache.cache_key(prefix, "extract", "x", {}, "failover", [], [])
    assert execute_queued(r, [cache.queue_lookup(prefix, missed)]) == [None]
    RedisBreaker(r, prefix, settings.breaker).force_open("claude", now, 60)

    got = scrape(registry)  # the same registry: read afresh, nothing cached from the first scrape
    status = fleet_status(r, settings, time.time(), detailed=True)
    rows = {p.provider: p for p in status.providers}
    openai = (("provider", "openai"),)
    assert got[("quorum_breaker_state", (("provider", "claude"),))] == 2
    assert got[("quorum_provider_errors_total", (("error", "ServerError"), ("provider", "claude")))] == 1
    assert got[("quorum_provider_calls_total", openai)] == rows["openai"].calls == 3
    assert (
        got[("quorum_provider_latency_seconds", (*openai, ("quantile", "0.95")))] * 1000
        == rows["openai"].latency_p95_ms
    )
    assert got[("quorum_provider_tokens_total", (("direction", "in"), *openai))] == rows["openai"].tokens_in
    assert got[("quorum_provider_cost_usd_total", openai)] == rows["openai"].cost_usd == 0.25
    assert got[("quorum_provider_budget_remaining_usd", openai)] == 0.75
    assert 58 <= got[("quorum_provider_ratelimit_headroom", (("limit", "rpm"), *openai))] <= 60
    assert got[("quorum_cache_misses_total", ())] == status.cache_misses == 1
    assert got[("quorum_jobs_recorded_total", ())] == status.jobs == 2
    assert got[("quorum_jobs_total", (("kind", "extract"), ("outcome", "ok"), ("strategy", "failover")))] == 1
    assert (
        got[("quorum_jobs_total", (("kind", "extract"), ("outcome", "failed"), ("strategy", "consensus")))]
        == 1
    )


def test_an_unreachable_redis_is_quorum_up_0_not_an_error(monkeypatch):
    monkeypatch.delenv("QUORUM_CONFIG", raising=False)
    client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    assert scrape(registry_for(client, load_settings())) == {("quorum_up", ()): 0.0}


def test_the_dashboard_and_scrape_example_use_what_the_exporter_serves(valkey_redis):
    docs = Path(__file__).resolve().parents[2] / "docs"
    served = {
        family.name
        for family in text_string_to_metric_families(
            generate_latest(registry_for(valkey_redis, Settings())).decode()
        )
    }
    dashboard = json.loads((docs / "grafana" / "quorum.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_total$", "", m) for e in exprs for m in re.findall(r"\bquorum_\w+", e)}
    assert used and used <= served, used - served
    assert ":9464" in (docs / "prometheus.yml").read_text()
