"""Worker pools: throughput, peak memory and in-flight provider calls of ONE worker with the
``threads`` pool vs ``prefork``, against emulated 500 ms providers, under a saturating load.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery

from bench.harness import THREE, Bench, quiet_profile
from bench.proc import machine_busy, tree_cpu, tree_memory
from bench.report import Section, cli
from bench.stats import fmt, table
from orchestration.data import load_emails

LATENCY_MS, SIGMA = 500.0, 0.25
SMALL = [("threads", 8), ("threads", 32), ("threads", 64), ("prefork", 2), ("prefork", 4), ("prefork", 8)]
FULL = [*SMALL, ("threads", 128), ("threads", 256)]
WARM_LIMIT_S, RAMP_LIMIT_S, DRAIN_S, POLL_S = 60.0, 30.0, 30.0, 0.02
MB = 1024 * 1024


class Sampler(threading.Thread):
    """Every 100 ms: provider calls in flight at the emulator and the worker tree's memory."""

    def __init__(self, b: Bench, pid: int) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.b, self.pid = b, pid
        self.stop = threading.Event()
        self.peak_in_flight = self.peak_rss = self.peak_pss = 0
        self.counting = False  # in-flight calls count only in the measured window

    def run(self) -> None:
        while not self.stop.wait(0.1):
            if self.counting:
                stats = self.b.emulator.stats().values()
                self.peak_in_flight = max(self.peak_in_flight, sum(s["in_flight"] for s in stats))
            rss, pss, _ = tree_memory(self.pid)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)


def _counts(b: Bench) -> tuple[int, int]:
    """Provider requests and faults served so far, over every provider."""
    stats = b.emulator.stats().values()
    return sum(s["requests"] for s in stats), sum(sum(s["errors"].values()) for s in stats)


class Load:
    """A closed loop of jobs against one worker: keeps ``backlog`` outstanding, counts completions."""

    def __init__(self, b: Bench, producer: Celery, strategy: str, backlog: int, cap: int) -> None:
        self.b, self.producer, self.strategy, self.backlog, self.cap = b, producer, strategy, backlog, cap
        self.emails = [e.text for e in load_emails()]
        self.outstanding: list[str] = []
        self.provider_of: dict[str, str] = {}
        self.done = self.failed = self.sent = 0

    def step(self) -> None:
        """Top up the backlog, collect finished jobs, pause one poll interval."""
        while len(self.outstanding) < self.backlog and self.sent < self.cap:
            i = self.sent
            providers = THREE if self.strategy != "failover" else [THREE[i % 3]]
            kwargs = {"text": self.emails[i % len(self.emails)], "strategy": self.strategy,
                      "use_cache": False, "providers": providers}  # fmt: skip
            job = self.producer.send_task("quorum.extract", kwargs=kwargs).id
            self.outstanding.append(job)
            self.provider_of[job] = providers[0]
            self.sent += 1
        self._poll()
        time.sleep(POLL_S)

    def _poll(self) -> None:
        keys = [self.b.app.backend.get_key_for_task(i) for i in self.outstanding]
        raw = self.b.redis.mget(keys) if keys else []
        still = []
        for job, value in zip(self.outstanding, raw, strict=True):
            status = json.loads(value).get("status") if value is not None else None
            if status in ("SUCCESS", "FAILURE"):
                self.done += 1
                self.failed += status == "FAILURE"
            else:
                still.append(job)
        self.outstanding = still

    def run_for(self, seconds: float) -> None:
        """Keep the loop going for ``seconds`` (or until the job cap)."""
        until = time.monotonic() + seconds
        while time.monotonic() < until and self.sent < self.cap:
            self.step()

    def ramp(self, limit: float) -> None:
        """Keep going until every job outstanding now has finished (at most ``limit`` s)."""
        before = set(self.outstanding)
        until = time.monotonic() + limit
        while before & set(self.outstanding) and time.monotonic() < until and self.sent < self.cap:
            self.step()

    def drain(self, limit: float) -> None:
        """Wait (at most ``limit`` s) for the outstanding jobs, sending no more."""
        until = time.monotonic() + limit
        while self.outstanding and time.monotonic() < until:
            self._poll()
            time.sleep(POLL_S)


_CALL_DONE = re.compile(r"/([\w-]+)\] Task quorum\.call\[([^\]]+?)\.(h0|c\d+)\] succeeded")


class Warmth:
    """Reads a worker's log: warm once every pool process has called every provider."""

    def __init__(self, path: Path, processes: int) -> None:
        self.path, self.processes, self.offset = path, processes, 0
        self.seen: set[tuple[str, str]] = set()

    def warm(self, provider_of: dict[str, str]) -> bool:
        """True when each of the pool's processes has finished a call to each provider."""
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for proc, job, tail in _CALL_DONE.findall(complete.decode(errors="replace")):
            provider = provider_of.get(job) if tail == "h0" else THREE[int(tail[1:])]
            if provider:
                self.seen.add((proc, provider))
        procs = {proc for proc, _ in self.seen}
        return len(procs) >= self.processes and len(self.seen) >= len(procs) * len(THREE)


def _set_latency(b: Bench, ms: float, sigma: float) -> None:
    for p in THREE:
        b.emulator.configure(p, latency_median_ms=ms, latency_sigma=sigma)


def measure(b: Bench, producer: Celery, pool: str, concurrency: int, window: float, cap: int,
            strategy: str) -> dict[str, Any]:  # fmt: skip
    """One worker with ``pool``/``concurrency`` under a closed-loop load: warm up with instant
    providers until every pool process has called every provider (imports, SDK clients,
    connections), switch to 500 ms providers, ramp up, then count for ``window`` seconds."""
    b.start_workers(1, pool, concurrency)
    name, pid = next(iter(b.procs)), b.worker_pids()[0]
    idle_rss, idle_pss, procs = tree_memory(pid)
    load = Load(b, producer, strategy, backlog=concurrency + concurrency // 4 + 4, cap=cap)
    warmth = Warmth(b.workdir / f"{name}.log", concurrency if pool == "prefork" else 1)
    sampler = Sampler(b, pid)
    sampler.start()
    t0 = time.monotonic()
    _set_latency(b, 0.0, 0.0)
    while time.monotonic() < t0 + WARM_LIMIT_S and not (
        load.done >= concurrency and warmth.warm(load.provider_of)
    ):
        load.run_for(0.25)
    warm_s = time.monotonic() - t0
    _set_latency(b, LATENCY_MS, SIGMA)
    load.ramp(RAMP_LIMIT_S)  # until every job sent before the switch is done...
    load.run_for(2 * LATENCY_MS / 1000)  # ...and the slow calls have filled the pipeline
    steady, (calls0, errors0), cpu0, done0 = time.monotonic(), _counts(b), tree_cpu(pid), load.done
    busy0 = machine_busy()
    sampler.counting = True
    load.run_for(window)
    end, (calls1, errors1), cpu1, done1 = time.monotonic(), _counts(b), tree_cpu(pid), load.done
    busy1 = machine_busy()
    sampler.counting = False
    load.drain(DRAIN_S)
    sampler.stop.set()
    sampler.join(timeout=5)
    b.stop_workers(signal.SIGQUIT)  # drained: a cold shutdown loses nothing and takes no 2 s
    producer.control.purge()
    errors_total = _counts(b)[1]
    b.emulator.reset()
    b.reset_state()
    span, jobs = end - steady, done1 - done0
    return {
        "pool": pool, "concurrency": concurrency, "warm_up_s": warm_s, "window_s": span,
        "jobs_s": jobs / span, "calls_s": (calls1 - calls0) / span,
        "cpu_ms_per_job": (cpu1 - cpu0) * 1000 / jobs if jobs else float("nan"),
        "cpu_cores": (cpu1 - cpu0) / span, "machine_busy": (busy1 - busy0) / (span * (os.cpu_count() or 1)),
        "sent": load.sent, "completed": load.done,
        "failed": load.failed, "unfinished": len(load.outstanding), "provider_errors": errors_total,
        "window_errors": errors1 - errors0, "peak_in_flight": sampler.peak_in_flight,
        "processes": procs, "idle_rss_mb": idle_rss / MB, "idle_pss_mb": idle_pss / MB,
        "peak_rss_mb": sampler.peak_rss / MB, "peak_pss_mb": sampler.peak_pss / MB,
    }  # fmt: skip


def run(full: bool = False, strategy: str = "failover") -> Section:
    """Every configuration in turn against one Valkey and one emulator, a fresh worker each."""
    configs, window, cap = (FULL, 15.0, 6000) if full else (SMALL, 2.5, 1000)
    rows: list[dict[str, Any]] = []
    with Bench(workers=0, profile=quiet_profile(LATENCY_MS, SIGMA)) as b:
        producer = Celery("bench-producer", broker=b.redis_url)
        producer.conf.update(task_default_queue="quorum", task_serializer="json", accept_content=["json"])
        try:
            for pool, c in configs:
                rows.append(measure(b, producer, pool, c, window, cap, strategy))
        finally:
            producer.close()
    return _section(rows, window, strategy, full)


def _row(r: dict[str, Any]) -> list[Any]:
    return [
        r["pool"], r["concurrency"], r["warm_up_s"], r["jobs_s"], r["calls_s"],
        r["concurrency"] / (LATENCY_MS / 1000), r["cpu_cores"], r["cpu_ms_per_job"],
        f"{100 * r['machine_busy']:.0f} %", r["peak_in_flight"],
        f"{r['failed']}/{r['unfinished']}/{r['provider_errors']}", r["processes"], r["idle_pss_mb"],
        r["peak_rss_mb"], r["peak_pss_mb"], r["peak_pss_mb"] / max(r["peak_in_flight"], 1),
    ]  # fmt: skip


HEADS = ["pool", "c", "warm-up s", "jobs/s", "provider calls/s", "ideal jobs/s", "worker CPU cores",
         "CPU ms/job", "machine CPU busy", "peak in-flight calls", "failed/unfinished/provider errors",
         "processes", "idle PSS MB", "peak RSS MB", "peak PSS MB", "PSS MB per in-flight call"]  # fmt: skip


def _section(rows: list[dict[str, Any]], window: float, strategy: str, full: bool) -> Section:
    clean = [r for r in rows if r["failed"] == 0 and r["unfinished"] == 0 and r["provider_errors"] == 0]
    rate = {id(r): (0.0 if math.isnan(r["jobs_s"]) else r["jobs_s"]) for r in rows}
    pools = ("threads", "prefork")
    best = {p: max((r for r in rows if r["pool"] == p), key=lambda r: rate[id(r)]) for p in pools}
    winner, loser = sorted(best.values(), key=lambda r: rate[id(r)], reverse=True)
    speedup = rate[id(winner)] / max(rate[id(loser)], 1e-9)
    ceiling = max((r["peak_in_flight"] for r in clean), default=0)
    why = " (no configuration had an error: the ceiling is CPU, not failures)" if clean == rows else ""
    same = {r["pool"]: r for r in rows if r["concurrency"] == 8}
    at8 = ""
    if len(same) == 2:
        at8 = (
            f" At the same 8 concurrent calls, threads used {fmt(same['threads']['peak_pss_mb'], 0)} MB "
            f"PSS and prefork {fmt(same['prefork']['peak_pss_mb'], 0)} MB "
            f"({fmt(same['threads']['jobs_s'])} vs {fmt(same['prefork']['jobs_s'])} jobs/s)."
        )
    md = (
        f"ONE worker per configuration; emulated providers at {LATENCY_MS:.0f} ms (median; log-normal "
        f"sigma {SIGMA}, so calls do not finish in lockstep); `{strategy}` jobs (one provider call each, "
        "rotating over claude/openai/gemini); a closed loop keeps 1.25 × c + 4 jobs outstanding. Each "
        "worker first warms up against instant providers until every pool process has called every "
        "provider (imports, SDK clients, connections; the *warm-up s* column, a cold-start cost) and "
        f"c jobs are done; then the providers switch to {LATENCY_MS:.0f} ms, and once every job sent "
        "before the switch has finished (plus 2 latencies), jobs, provider calls and CPU are counted over "
        f"{window:g} s. Memory and CPU: the "
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
    data = {"latency_ms": LATENCY_MS, "sigma": SIGMA, "window_s": window, "strategy": strategy,
            "configs": rows, "winner": winner["pool"], "speedup": speedup,
            "max_clean_in_flight": ceiling, "full": full}  # fmt: skip
    return Section("pools", "Worker pool: threads vs prefork", md, data)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    cli(run, argv)


if __name__ == "__main__":
    main()
