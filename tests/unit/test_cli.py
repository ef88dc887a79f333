"""The ``quorum`` CLI against a real Valkey: exit codes, JSON output, fleet-wide settings."""

from __future__ import annotations

import json
import time

import pytest
import redis
from typer.testing import CliRunner

from orchestration.breaker import RedisBreaker
from orchestration.config import load_settings
from orchestration.state import read_fleet, record_call
from quorum_cli.main import cli

runner = CliRunner()


@pytest.fixture
def env(valkey_url: str, monkeypatch: pytest.MonkeyPatch) -> redis.Redis:
    monkeypatch.setenv("QUORUM_REDIS_URL", valkey_url)
    monkeypatch.delenv("QUORUM_CONFIG", raising=False)
    monkeypatch.chdir("/")  # no ./quorum.toml: the built-in defaults
    client = redis.Redis.from_url(valkey_url)
    client.flushdb()
    return client


def test_set_strategy_is_read_by_the_fleet(env):
    result = runner.invoke(cli, ["set-strategy", "consensus", "--order", "openai,claude"])
    assert result.exit_code == 0, result.output
    fleet = read_fleet(env, "quorum:")
    assert fleet.strategy == "consensus" and fleet.order == ["openai", "claude"]


def test_unknown_strategy_is_refused_with_the_valid_ones(env):
    result = runner.invoke(cli, ["set-strategy", "coin_flip"])
    assert result.exit_code == 2
    assert "failover" in result.output and "best_match" in result.output
    assert read_fleet(env, "quorum:").strategy is None


def test_unknown_provider_in_order_is_refused(env):
    result = runner.invoke(cli, ["set-strategy", "failover", "--order", "openai,nope"])
    assert result.exit_code == 2 and "nope" in result.output


def test_status_json_reports_breaker_health_and_why(env):
    now = time.time()
    record_call(env, "quorum:", "openai", ok=True, now=now, latency_ms=120.0)
    record_call(env, "quorum:", "claude", ok=False, now=now, error_kind="ServerError", message="HTTP 500")
    RedisBreaker(env, "quorum:", load_settings().breaker).force_open("claude", now, 60)
    result = runner.invoke(cli, ["status", "--detailed", "--json"])
    assert result.exit_code == 1  # an enabled provider is unhealthy
    data = json.loads(result.output)
    rows = {p["provider"]: p for p in data["providers"]}
    assert rows["claude"]["state"] == "open" and "circuit breaker open" in rows["claude"]["reason"]
    assert rows["claude"]["errors"] == {"ServerError": 1}
    assert rows["openai"]["healthy"] and rows["openai"]["success_rate"] == 1.0
    assert data["strategy"] == "failover" and data["order"][:3] == ["claude", "openai", "gemini"]
    assert "cache_hit_rate" in data and "avg_cost_per_job_usd" in data


def test_reset_closes_a_breaker(env):
    breaker = RedisBreaker(env, "quorum:", load_settings().breaker)
    breaker.force_open("openai", time.time(), 60)
    assert runner.invoke(cli, ["reset", "openai"]).exit_code == 0
    assert breaker.state("openai", time.time()).state.value == "closed"


def test_status_exit_code_when_redis_is_unreachable(monkeypatch):
    monkeypatch.setenv("QUORUM_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.chdir("/")
    assert runner.invoke(cli, ["status"]).exit_code == 3


def test_exported_schemas_match_the_models():
    from pathlib import Path

    from orchestration.models import ExtractionRequest, ExtractionResult

    folder = Path(__file__).resolve().parents[2] / "docs" / "schemas"
    for name, model in {"request": ExtractionRequest, "result": ExtractionResult}.items():
        stored = json.loads((folder / f"quorum.extract.{name}.json").read_text())
        assert stored == model.model_json_schema(), "run: quorum schemas --out docs/schemas"
