"""``quorum demo``: the whole product on one machine in under two minutes.

Runs in a namespace of its own: its own embedded Valkey (data under ``$QUORUM_HOME/demo``) and
key prefix ``quorum-demo:``, whatever Redis the user configured, so the user's breakers, health,
costs, cache and fleet setting are left exactly as they were and its jobs never show in the
user's ``quorum status``. Starts the emulator when no API key is set, and two worker processes;
sends labelled emails under each strategy with a progress bar; takes the primary provider down
half-way so failover and the breaker show; prints accuracy, latency and cost per
strategy and the providers' state; stops every process it started.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from orchestration.config import Settings
from orchestration.data import FIELDS, load_emails
from orchestration.extraction import normalize_value
from stack import embedded
from stack.client import submit
from stack.local import LocalStack

#: Key prefix of the demo's state (inside its own server, too: belt and braces).
DEMO_PREFIX = "quorum-demo:"


def demo_settings(settings: Settings) -> Settings:
    """The user's settings moved to the demo's namespace: no configured Redis, its own prefix."""
    return settings.model_copy(
        update={"redis_url": None, "broker_url": None, "result_backend": None, "key_prefix": DEMO_PREFIX}
    )


@dataclass
class StrategyFigures:
    """What one strategy achieved in the demo."""

    jobs: int = 0
    failed: int = 0
    correct_fields: int = 0
    total_fields: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    cost_usd: float = 0.0

    def row(self, name: str) -> list[str]:
        lat = sorted(self.latencies_ms) or [0.0]
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        acc = self.correct_fields / self.total_fields if self.total_fields else 0.0
        return [
            name,
            str(self.jobs),
            str(self.failed),
            f"{acc:.1%}",
            f"{statistics.median(lat):.0f}",
            f"{p95:.0f}",
            f"${self.cost_usd:.5f}",
            f"${self.cost_usd / max(1, self.jobs - self.failed):.6f}",
        ]


def _score(result: dict[str, Any], labels: dict[str, str | None], figures: StrategyFigures) -> None:
    for name in FIELDS:
        got = result["fields"].get(name, {}).get("value")
        figures.total_fields += 1
        figures.correct_fields += normalize_value(name, got) == normalize_value(name, labels.get(name))


def run_demo(
    settings: Settings, *, emails: int, console: Console, status: Callable[[Settings], object]
) -> int:
    """Run the demo in its own namespace; ``status`` reports on it; returns how many jobs failed."""
    settings = demo_settings(settings)
    sample = load_emails()[:emails]
    # Failover runs long enough after the outage for the breaker to open and skip the primary.
    outage_jobs = settings.breaker.consecutive_failures + 2
    failover_sample = (sample * (1 + (2 * outage_jobs) // max(1, len(sample))))[
        : max(len(sample), 2 * outage_jobs)
    ]
    strategies = ["failover", "consensus", "best_match"]
    primary = settings.enabled_providers()[0]
    figures = {s: StrategyFigures() for s in strategies}
    env = dict(os.environ, QUORUM_KEY_PREFIX=DEMO_PREFIX)  # the stack points Redis at its own
    with LocalStack(
        settings, workers=2, say=console.print, env=env, redis_dir=embedded.data_dir("demo")
    ) as stack:
        settings = settings.model_copy(update={"redis_url": stack.redis_url})
        app = stack.fleet.app
        total = len(failover_sample) + len(sample) * (len(strategies) - 1)
        with Progress(console=console) as progress:
            bar = progress.add_task("jobs", total=total)
            for s in strategies:
                pending = []
                emails_of = failover_sample if s == "failover" else sample
                for i, email in enumerate(emails_of):
                    if s == "failover" and stack.emulator_url and i == len(emails_of) - outage_jobs:
                        httpx.post(f"{stack.emulator_url}/_admin/providers/{primary}/down", timeout=5)
                        progress.console.print(
                            f"[yellow]{primary} taken down: watch failover and its breaker"
                        )
                    pending.append(
                        (
                            email,
                            submit(
                                app,
                                "quorum.extract",
                                {"text": email.text, "strategy": s, "use_cache": s != "failover"},
                            ),
                        )
                    )
                    if s == "failover":  # one at a time, so the outage lands mid-run
                        _collect(pending, figures[s], progress, bar)
                _collect(pending, figures[s], progress, bar)
                if s == "failover" and stack.emulator_url:
                    httpx.post(f"{stack.emulator_url}/_admin/providers/{primary}/up", timeout=5)
        table = Table(title="Quorum demo: per strategy")
        for col in ("strategy", "jobs", "failed", "field accuracy", "p50 ms", "p95 ms", "cost", "per job"):
            table.add_column(col)
        for s in strategies:
            table.add_row(*figures[s].row(s))
        console.print(table)
        if stack.emulator_url:
            console.print("[dim]Providers were emulated: accuracy measures the merge, not real models.")
        status(settings)
    return sum(f.failed for f in figures.values())


def _collect(pending: list[Any], figures: StrategyFigures, progress: Progress, bar: Any) -> None:
    for email, job in pending:
        started = time.perf_counter()
        try:
            result = job.get(timeout=120)
        except Exception as e:  # the demo reports failures, it does not stop on them
            figures.failed += 1
            progress.console.print(f"[red]{email.id}: {type(e).__name__}: {e}")
        else:
            _score(result, email.labels, figures)
            figures.latencies_ms.append(result["latency_ms"])
            figures.cost_usd += result["cost_usd"]
        figures.jobs += 1
        progress.advance(bar)
        del started
    pending.clear()
