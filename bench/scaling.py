"""Scaling: throughput against the number of worker processes — jobs/s and provider calls/s
with 1, 2 and 4 workers (threads pool at its default concurrency; prefork as a second series)
against emulated 500 ms providers under a saturating closed-loop load, with the peak memory
(RSS and PSS) per worker and the scaling efficiency jobs/s(n) ÷ (n × jobs/s(1)).
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from bench.harness import Bench, quiet_profile
from bench.load import (
    DRAIN_S,
    LATENCY_MS,
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
from bench.proc import descendants
from bench.report import Section, cli
from bench.stats import fmt, pct, table

#: (pool, concurrency per worker): threads at Quorum's default (32); prefork at Celery's default
#: (one process per core, 2 here) — each prefork process warms every SDK, so it stays small.
POOLS = [("threads", 32), ("prefork", 2)]
SMALL_WORKERS, FULL_WORKERS = (1, 2, 4), (1, 2, 3, 4, 6)


def _nodes(b: Bench, names: list[str]) -> dict[str, str]:
    """The full node names (``name@host``) of the workers called ``names``, from a ping."""
    replies = [next(iter(r)) for r in b.app.control.ping(timeout=1.0, limit=len(b.procs))]
    nodes = {name: next((r for r in replies if r.startswith(name + "@")), "") for name in names}
    if not all(nodes.values()):
        raise RuntimeError(f"workers did not answer ping: {nodes}")
    return nodes


def _consume(b: Bench, nodes: list[str], on: bool) -> None:
    """Make the workers ``nodes`` (stop) consuming the job queue; they stay up and warm."""
    if not nodes:
        return
    control = b.app.control.add_consumer if on else b.app.control.cancel_consumer
    replies = control("quorum", destination=nodes, reply=True, timeout=5.0)
    if len(replies) != len(nodes):
        raise RuntimeError(f"{'add' if on else 'cancel'}_consumer: replies {replies} from {nodes}")


def series(b: Bench, producer: Celery, pool: str, c: int, workers: tuple[int, ...], window: float,
           min_jobs: int, strategy: str) -> list[dict[str, Any]]:  # fmt: skip
    """One pool at ``c`` per worker: start ``max(workers)`` workers at once and warm them all with
    instant providers; then for each count n in ``workers``, only the first n consume the job
    queue (the others stay up, idle) while a closed loop scaled to n counts a ``window`` at
    500 ms (longer where fewer than ``min_jobs`` would finish)."""
    t0 = time.monotonic()
    b.start_workers(max(workers), pool, c)
    names = list(b.procs)
    pids = {name: b.procs[name].pid for name in names}
    nodes = _nodes(b, names)
    load = Load(b, producer, strategy, backlog=max(workers) * backlog_for(c), cap=1_000_000)
    sampler = Sampler(b, list(pids.values()))
    sampler.start()
    rows: list[dict[str, Any]] = []
    try:
        warm_up(b, load, [Warmth.of(b, name, pool, c) for name in names], min_done=c)
        load.drain(DRAIN_S)  # at 0 ms: quick; no job left on a worker about to stop consuming
        ready_s = time.monotonic() - t0
        consuming = set(names)
        for n in workers:
            active = names[:n]
            _consume(b, [nodes[x] for x in consuming - set(active)], on=False)
            _consume(b, [nodes[x] for x in set(active) - consuming], on=True)
            consuming = set(active)
            load.backlog = n * backlog_for(c)
            live = [pids[x] for x in active]
            sampler.watch(live)
            counted = count_window(b, load, live, sampler, window_for(window, min_jobs, n * c))
            processes = sum(len(descendants(p)) for p in live)
            rows.append({"pool": pool, "workers": n, "concurrency": c, "slots": n * c,
                         "ideal_jobs_s": n * c / (LATENCY_MS / 1000), "start_and_warm_s": ready_s,
                         "processes": processes, **counted, **sampler.memory()})  # fmt: skip
    finally:
        errors = wind_down(b, load, producer)
        sampler.close()
    for r in rows:
        r["efficiency"] = r["jobs_s"] / (r["workers"] * rows[0]["jobs_s"]) if rows[0]["jobs_s"] else None
        r["series_failed"], r["series_unfinished"], r["series_provider_errors"] = (
            load.failed,
            len(load.outstanding),
            errors,
        )
    return rows


def run(full: bool = False, strategy: str = "failover") -> Section:
    """Each pool's series in turn against one Valkey and one emulator."""
    workers, window, min_jobs = (FULL_WORKERS, 10.0, 100) if full else (SMALL_WORKERS, 2.0, 24)
    rows: list[dict[str, Any]] = []
    with Bench(workers=0, profile=quiet_profile(LATENCY_MS, SIGMA)) as b:
        producer = producer_for(b)
        try:
            for pool, c in POOLS:
                rows += series(b, producer, pool, c, workers, window, min_jobs, strategy)
        finally:
            producer.close()
    return _section(rows, window, min_jobs, strategy, full)


HEADS = ["pool", "workers", "c per worker", "window s", "jobs counted", "ideal jobs/s", "jobs/s",
         "provider calls/s", "scaling efficiency", "worker CPU cores", "CPU ms/job", "machine CPU busy",
         "peak in-flight calls", "window failed/provider errors", "processes", "peak RSS MB per worker",
         "peak PSS MB per worker", "peak PSS MB all workers"]  # fmt: skip


def _row(r: dict[str, Any]) -> list[Any]:
    eff = r["efficiency"]
    cpu_ms = r["cpu_ms_per_job"]
    return [
        r["pool"], r["workers"], r["concurrency"], r["window_s"], r["window_jobs"], r["ideal_jobs_s"],
        r["jobs_s"], r["calls_s"],
        "n/a" if eff is None else pct(eff, 0), r["cpu_cores"], "n/a" if cpu_ms is None else cpu_ms,
        pct(r["machine_busy"], 0), r["peak_in_flight"], f"{r['window_failed']}/{r['window_errors']}",
        r["processes"], r["peak_rss_mb_per_worker"], r["peak_pss_mb_per_worker"],
        r["peak_pss_mb"],
    ]  # fmt: skip


def _at(rows: list[dict[str, Any]], pool: str, n: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["pool"] == pool and r["workers"] == n), None)


def _findings(rows: list[dict[str, Any]], cores: int) -> str:
    """Sentences on what the figures say, from the figures."""
    out = []
    for pool, _ in POOLS:
        mine = [r for r in rows if r["pool"] == pool]
        if len(mine) < 2:
            continue
        one, top = mine[0], mine[-1]
        steps = ", ".join(f"{r['workers']}: {fmt(r['jobs_s'])} jobs/s ({pct(r['efficiency'] or 0, 0)})"
                          for r in mine)  # fmt: skip
        ideal = top["jobs_s"] >= 0.8 * top["ideal_jobs_s"]
        limit = (
            "still close to its ideal (slots ÷ latency): it is bound by provider latency, not CPU, "
            "so each worker adds its slots"
            if ideal
            else f"well under its ideal of {fmt(top['ideal_jobs_s'], 0)} jobs/s with the machine "
            f"{pct(top['machine_busy'], 0)} busy"
        )
        out.append(
            f"**{pool}** (c={one['concurrency']} per worker) — workers: jobs/s (efficiency): {steps}. "
            f"At {top['workers']} workers it is {limit}; worker CPU {fmt(one['cpu_ms_per_job'] or 0)} "
            f"ms/job at 1 worker, {fmt(top['cpu_ms_per_job'] or 0)} at {top['workers']}."
        )
    t1, t2 = _at(rows, "threads", 1), _at(rows, "threads", 2)
    gil = ""
    if t1 and t2 and t1["cpu_ms_per_job"]:
        gil = (
            f" A threads worker spends about {fmt(t1['cpu_ms_per_job'], 0)} ms of CPU per job, so one "
            f"core — all the GIL lets one process use — caps it near {fmt(1000 / t1['cpu_ms_per_job'], 0)} "
            f"jobs/s whatever its concurrency; one worker used {fmt(t1['cpu_cores'])} cores, two "
            f"{fmt(t2['cpu_cores'])} together."
        )
    top = max(r["workers"] for r in rows)
    return (
        f"This machine has **{cores} cores**, shared by the workers, Valkey, the emulator, this "
        "producer and, on a shared machine, other people's processes (*machine CPU busy* counts "
        f"them all). Once the cores are busy, more worker processes add no CPU, so **{top} workers "
        f"on {cores} cores do not scale linearly**: efficiency falls as *machine CPU busy* nears "
        f"100 %: the ceiling here is the machine's {cores} cores, not the worker count.{gil} On a machine "
        "with a core or more per worker (and Valkey elsewhere), the 1 → 2 step is the better guide "
        "to what adding workers buys.\n\n" + "\n\n".join(out)
    )


def _low(rows: list[dict[str, Any]]) -> float:
    """The fewest jobs any stage counted in its window."""
    return float(min((r["window_jobs"] for r in rows), default=0))


def _section(rows: list[dict[str, Any]], window: float, min_jobs: int, strategy: str, full: bool) -> Section:
    cores = os.cpu_count() or 1
    starts = {r["pool"]: r["start_and_warm_s"] for r in rows}
    warm = ", ".join(f"{p} {fmt(t)} s" for p, t in starts.items())
    md = (
        f"Emulated providers at {LATENCY_MS:.0f} ms (median; log-normal sigma {SIGMA}); `{strategy}` jobs "
        "(one provider call each, rotating over claude/openai/gemini); a closed loop keeps "
        "n × (1.25 × c + 4) jobs outstanding, so every slot stays busy. Per pool, all "
        f"{max(r['workers'] for r in rows)} workers are started at once and warmed against instant "
        "providers until every one of their pool processes has called every provider (start + "
        f"warm-up: {warm}); then the providers switch to {LATENCY_MS:.0f} ms, and for each n only "
        "the first n workers consume the job queue (the others stay up, idle, after Celery's "
        "`cancel_consumer`). After a ramp (every job outstanding at the change finished, plus 2.5 "
        f"latencies), jobs, provider calls and the active workers' CPU are counted over {window:g} s, "
        f"or longer where the slots would finish fewer than {min_jobs} jobs in that (*window s*). "
        "*Ideal* = n × c ÷ provider latency; *scaling efficiency* = jobs/s at n ÷ (n × jobs/s at 1). "
        "Memory: each active worker's process tree from /proc, peak over its stage, mean over the "
        "workers; PSS splits the pages a prefork parent shares with its children, RSS counts them "
        "per process. *Jobs counted* is the sample behind each rate (fewest here: "
        f"{fmt(_low(rows), 0)}): a job or two more or less at a window's edges moves a small count "
        "by several percent, so read efficiencies within ±10 % of each other as equal.\n\n"
        + table(HEADS, [_row(r) for r in rows])
        + "\n\n"
        + _findings(rows, cores)
    )
    keep = ("pool", "workers", "concurrency", "slots", "ideal_jobs_s", "jobs_s", "calls_s", "efficiency",
            "cpu_cores", "cpu_ms_per_job", "machine_busy", "peak_in_flight", "window_s", "window_jobs",
            "window_failed", "window_errors", "start_and_warm_s", "processes", "peak_rss_mb_per_worker",
            "peak_pss_mb_per_worker", "max_rss_mb_one_worker", "max_pss_mb_one_worker", "peak_rss_mb",
            "peak_pss_mb", "series_failed", "series_unfinished", "series_provider_errors")  # fmt: skip
    data = {
        "latency_ms": LATENCY_MS, "sigma": SIGMA, "window_s": window, "strategy": strategy,
        "cores": cores, "pools": [{"pool": p, "concurrency": c} for p, c in POOLS],
        "series": [{k: r[k] for k in keep} for r in rows], "full": full,
    }  # fmt: skip
    return Section("scaling", "Scaling: throughput against worker count", md, data)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    cli(run, argv)


if __name__ == "__main__":
    main()
