"""Worker pools: throughput, peak memory and in-flight provider calls of ONE worker with the
``threads`` pool vs ``prefork``, against emulated 500 ms providers, under a saturating load.
"""

from __future__ import annotations

import math
from typing import Any

from celery import Celery

from bench.harness import Bench, quiet_profile
from bench.load import (
    LATENCY_MS,
    MB,
    SIGMA,
    Load,
    Sampler,
    Warmth,
    backlog_for,
    count_window,
    producer_for,
    warm_up,
    wind_down,
    window_for,
)
from bench.proc import tree_memory
from bench.report import Section, cli
from bench.stats import fmt, pct, table

#: Small: the default threads pool around its default concurrency (32), and threads vs prefork at
#: the same 4 slots; each prefork process must import and warm every SDK, so prefork is the slow one.
SMALL = [("threads", 4), ("threads", 32), ("threads", 64), ("prefork", 4)]
FULL = [("threads", 4), ("threads", 8), ("threads", 32), ("threads", 64), ("threads", 128), ("threads", 256),
        ("prefork", 2), ("prefork", 4), ("prefork", 8)]  # fmt: skip


def measure(b: Bench, producer: Celery, pool: str, concurrency: int, window: float, cap: int,
            strategy: str, min_jobs: int = 0) -> dict[str, Any]:  # fmt: skip
    """One worker with ``pool``/``concurrency`` under a closed-loop load: warm up with instant
    providers until every pool process has called every provider (imports, SDK clients,
    connections), switch to 500 ms providers, ramp up, then count for ``window`` seconds (more
    where fewer than ``min_jobs`` would finish)."""
    b.start_workers(1, pool, concurrency)
    name, pid = next(iter(b.procs)), b.worker_pids()[0]
    idle_rss, idle_pss, procs = tree_memory(pid)
    load = Load(b, producer, strategy, backlog=backlog_for(concurrency), cap=cap)
    sampler = Sampler(b, [pid])
    sampler.start()
    warm_s = warm_up(b, load, [Warmth.of(b, name, pool, concurrency)], min_done=concurrency)
    counted = count_window(b, load, [pid], sampler, window_for(window, min_jobs, concurrency))
    errors_total = wind_down(b, load, producer)
    sampler.close()
    memory = sampler.memory()
    return {
        "pool": pool, "concurrency": concurrency, "warm_up_s": warm_s, **counted,
        "sent": load.sent, "completed": load.done, "failed": load.failed,
        "unfinished": len(load.outstanding), "provider_errors": errors_total,
        "processes": procs, "idle_rss_mb": idle_rss / MB, "idle_pss_mb": idle_pss / MB,
        "peak_rss_mb": memory["peak_rss_mb"], "peak_pss_mb": memory["peak_pss_mb"],
    }  # fmt: skip


def run(full: bool = False, strategy: str = "failover") -> Section:
    """Every configuration in turn against one Valkey and one emulator, a fresh worker each."""
    configs, window, min_jobs, cap = (FULL, 15.0, 100, 6000) if full else (SMALL, 2.5, 24, 1000)
    rows: list[dict[str, Any]] = []
    with Bench(workers=0, profile=quiet_profile(LATENCY_MS, SIGMA)) as b:
        producer = producer_for(b)
        try:
            for pool, c in configs:
                rows.append(measure(b, producer, pool, c, window, cap, strategy, min_jobs))
        finally:
            producer.close()
    return _section(rows, window, min_jobs, strategy, full)


def _num(value: float | None) -> float:
    return math.nan if value is None else value


def _rate(r: dict[str, Any]) -> float:
    """Jobs/s for ranking (NaN ranks last)."""
    return 0.0 if math.isnan(r["jobs_s"]) else r["jobs_s"]


def _row(r: dict[str, Any]) -> list[Any]:
    return [
        r["pool"], r["concurrency"], r["warm_up_s"], r["jobs_s"], r["calls_s"],
        r["concurrency"] / (LATENCY_MS / 1000), r["cpu_cores"], _num(r["cpu_ms_per_job"]),
        pct(r["machine_busy"], 0), r["peak_in_flight"],
        f"{r['failed']}/{r['unfinished']}/{r['provider_errors']}", r["processes"], r["idle_pss_mb"],
        r["peak_rss_mb"], r["peak_pss_mb"], r["peak_pss_mb"] / max(r["peak_in_flight"], 1),
    ]  # fmt: skip


HEADS = ["pool", "c", "warm-up s", "jobs/s", "provider calls/s", "ideal jobs/s", "worker CPU cores",
         "CPU ms/job", "machine CPU busy", "peak in-flight calls", "failed/unfinished/provider errors",
         "processes", "idle PSS MB", "peak RSS MB", "peak PSS MB", "PSS MB per in-flight call"]  # fmt: skip


def _section(rows: list[dict[str, Any]], window: float, min_jobs: int, strategy: str, full: bool) -> Section:
    clean = [r for r in rows if r["failed"] == 0 and r["unfinished"] == 0 and r["provider_errors"] == 0]
    best = [max((r for r in rows if r["pool"] == p), key=_rate) for p in ("threads", "prefork")]
    winner, loser = sorted(best, key=_rate, reverse=True)
    speedup = _rate(winner) / max(_rate(loser), 1e-9)
    ceiling = max((r["peak_in_flight"] for r in clean), default=0)
    why = " (no configuration had an error: the ceiling is CPU, not failures)" if clean == rows else ""
    common = {r["concurrency"] for r in rows if r["pool"] == "threads"}
    common &= {r["concurrency"] for r in rows if r["pool"] == "prefork"}
    same = {r["pool"]: r for r in rows if r["concurrency"] == max(common, default=None)}
    at8 = ""
    if len(same) == 2:
        at8 = (
            f" At the same {max(common)} concurrent calls, threads used "
            f"{fmt(same['threads']['peak_pss_mb'], 0)} MB PSS and prefork "
            f"{fmt(same['prefork']['peak_pss_mb'], 0)} MB "
            f"({fmt(same['threads']['jobs_s'])} vs {fmt(same['prefork']['jobs_s'])} jobs/s)."
        )
    md = (
        f"ONE worker per configuration; emulated providers at {LATENCY_MS:.0f} ms (median; log-normal "
        f"sigma {SIGMA}, so calls do not finish in lockstep); `{strategy}` jobs (one provider call each, "
        "rotating over claude/openai/gemini); a closed loop keeps 1.25 × c + 4 jobs outstanding. Each "
        "worker first warms up against instant providers until every pool process has called every "
        "provider (imports, SDK clients, connections; the *warm-up s* column, a cold-start cost) and "
        f"c jobs are done; then the providers switch to {LATENCY_MS:.0f} ms, and once every job sent "
        "before the switch has finished (plus 2.5 latencies, so the window's edges fall between waves of "
        "completions), jobs, provider calls and CPU are counted over "
        f"{window:g} s (longer where c slots would finish fewer than {min_jobs} jobs in that). "
        "Memory and CPU: the "
        "worker's process tree from /proc (RSS double-counts pages a prefork parent shares with its "
        "children; PSS does not). *Ideal* = c / provider latency.\n\n"
        + table(HEADS, [_row(r) for r in rows])
        + f"\n\nWinner: **{winner['pool']}** — best {winner['pool']} (c={winner['concurrency']}) "
        f"{fmt(winner['jobs_s'])} jobs/s vs best {loser['pool']} (c={loser['concurrency']}) "
        f"{fmt(loser['jobs_s'])} jobs/s: **×{speedup:.1f}** the throughput, with "
        f"{fmt(winner['peak_pss_mb'], 0)} vs {fmt(loser['peak_pss_mb'], 0)} MB peak PSS.{at8} "
        f"Highest in-flight provider calls one worker sustained without errors: {ceiling}{why}. "
        "Where jobs/s falls short of the ideal, see *machine CPU busy*: near 100 % means this "
        "machine (worker, Valkey, the emulator and this producer share its cores) is the limit, not "
        "the pool; *worker CPU cores* near 1 means a threads worker hit the GIL (one process runs "
        "Python on one core at a time) and more worker processes are the way up."
    )
    data = {"latency_ms": LATENCY_MS, "sigma": SIGMA, "window_s": window, "min_jobs": min_jobs,
            "strategy": strategy, "configs": rows, "winner": winner["pool"], "speedup": speedup,
            "max_clean_in_flight": ceiling, "full": full}  # fmt: skip
    return Section("pools", "Worker pool: threads vs prefork", md, data)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    cli(run, argv)


if __name__ == "__main__":
    main()
