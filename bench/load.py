"""Closed-loop load against running workers, and the job/emulator helpers the worker benchmarks share.

:class:`Load` keeps a fixed number of ``quorum.extract`` jobs outstanding and counts completions;
:class:`Warmth` reads a worker's log to tell when every pool process has called every provider;
:class:`Sampler` records the peak of provider calls in flight (at the emulator) and the peak
memory of the worker process trees; :func:`warm_up` and :func:`count_window` are the two phases
of a measurement (instant providers until warm, then 500 ms providers counted over a window).
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

from bench.harness import THREE, Bench
from bench.proc import descendants, machine_busy, memory_of, tree_cpu
from orchestration.data import load_emails

LATENCY_MS, SIGMA = 500.0, 0.25
WARM_LIMIT_S, RAMP_LIMIT_S, DRAIN_S, POLL_S = 60.0, 30.0, 30.0, 0.02
MB = 1024 * 1024
FINISHED = ("SUCCESS", "FAILURE")  # a job's stored status once it is over
#: Latencies between the end of the ramp and the start of a counted window (see count_window).
FILL_LATENCIES = 2.5


def producer_for(b: Bench) -> Celery:
    """A bare producer app on the bench's broker (sends by name, imports nothing of Quorum's)."""
    producer = Celery("bench-producer", broker=b.redis_url)
    producer.conf.update(task_default_queue="quorum", task_serializer="json", accept_content=["json"])
    return producer


def backlog_for(concurrency: int) -> int:
    """Jobs a closed loop keeps outstanding per worker of ``concurrency``: 1.25 × c + 4."""
    return concurrency + concurrency // 4 + 4


def set_latency(b: Bench, ms: float, sigma: float) -> None:
    """Every emulated provider at ``ms`` median latency (log-normal ``sigma``)."""
    for p in THREE:
        b.emulator.configure(p, latency_median_ms=ms, latency_sigma=sigma)


def counts(b: Bench) -> tuple[int, int]:
    """Provider requests and faults served so far, over every provider."""
    stats = b.emulator.stats().values()
    return sum(s["requests"] for s in stats), sum(sum(s["errors"].values()) for s in stats)


def in_flight(b: Bench) -> int:
    """Provider calls in flight at the emulator now, over every provider."""
    return sum(s["in_flight"] for s in b.emulator.stats().values())


def job_kwargs(strategy: str, i: int, text: str) -> dict[str, Any]:
    """The ``i``-th job of ``strategy``: failover rotates its one provider, the others use all three."""
    providers = THREE if strategy != "failover" else [THREE[i % 3]]
    return {"text": text, "strategy": strategy, "providers": providers, "use_cache": False}


class Finished:
    """Jobs' final states as the workers publish them: the notification ``AsyncResult.get()``
    waits on (a result is stored with a PUBLISH on its key), so a closed loop learns of an answer
    when it lands instead of at its next poll. One pattern subscription covers every job (no
    subscribe per job, so none can come after its answer); a sweep of the outstanding jobs'
    stored states every ``sweep_s`` is the net for a message missed."""

    def __init__(self, b: Bench, sweep_s: float = 0.5) -> None:
        self.b, self.sweep_s = b, sweep_s
        key = b.app.backend.get_key_for_task("-")  # bytes with Celery's key prefix
        self.prefix = (key.decode() if isinstance(key, bytes) else key)[:-1]
        self.pubsub = b.redis.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"{self.prefix}*")
        self.pubsub.get_message(timeout=1.0)  # the subscription's confirmation
        self.swept = time.monotonic()

    def wait(self, outstanding: set[str], timeout: float) -> list[tuple[str, str]]:
        """``(job id, final status)`` of the outstanding jobs that finished, after waiting up to
        ``timeout`` for the first published result."""
        out: list[tuple[str, str]] = []
        message = self.pubsub.get_message(timeout=timeout)
        while message is not None:
            channel = message["channel"]
            job = (channel.decode() if isinstance(channel, bytes) else channel)[len(self.prefix) :]
            if job in outstanding:
                status = json.loads(message["data"]).get("status")
                if status in FINISHED:
                    out.append((job, status))
            message = self.pubsub.get_message(timeout=0.0)
        if time.monotonic() - self.swept >= self.sweep_s:
            self.swept = time.monotonic()
            found = {j for j, _ in out}
            ids = [j for j in outstanding if j not in found]
            out += [(j, s) for j, s in zip(ids, statuses(self.b, ids), strict=True) if s in FINISHED]
        return out

    def close(self) -> None:
        self.pubsub.close()


def statuses(b: Bench, ids: list[str]) -> list[str | None]:
    """The stored status of each job (``SUCCESS``, ``FAILURE``...; None while it has no result)."""
    raw = b.redis.mget([b.app.backend.get_key_for_task(i) for i in ids]) if ids else []
    return [json.loads(v).get("status") if v is not None else None for v in raw]


class LogTail:
    """The complete lines a log file gains between reads."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> bytes:
        """The complete lines written since the last read."""
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        return complete


class Sampler(threading.Thread):
    """Every 100 ms: provider calls in flight at the emulator (while ``counting``) and the memory
    of each watched worker's process tree (RSS and PSS; the trees are re-read once a second, so
    a sample costs no full scan of /proc)."""

    def __init__(self, b: Bench, pids: list[int]) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.b = b
        self.stop = threading.Event()
        self.counting = False  # in-flight calls count only in the measured window
        self._lock = threading.Lock()
        self._trees: dict[int, list[int]] = {}
        self._trees_at = 0.0
        self.watch(pids)

    def watch(self, pids: list[int]) -> None:
        """Sample the trees of ``pids`` from now on, with every peak back at zero."""
        with self._lock:
            self.pids = list(pids)
            self._trees_at = 0.0
            self.peak_in_flight = self.peak_rss = self.peak_pss = 0
            self.worker_rss: dict[int, int] = dict.fromkeys(self.pids, 0)
            self.worker_pss: dict[int, int] = dict.fromkeys(self.pids, 0)

    def run(self) -> None:
        while not self.stop.wait(0.1):
            calls = in_flight(self.b) if self.counting else None
            with self._lock:
                if calls is not None:
                    self.peak_in_flight = max(self.peak_in_flight, calls)
                self._sample()

    def _sample(self) -> None:
        now = time.monotonic()
        if now - self._trees_at > 1.0:
            self._trees = {pid: descendants(pid) for pid in self.pids}
            self._trees_at = now
        total_rss = total_pss = 0
        for root, tree in self._trees.items():
            rss, pss = memory_of(tree)
            self.worker_rss[root] = max(self.worker_rss.get(root, 0), rss)
            self.worker_pss[root] = max(self.worker_pss.get(root, 0), pss)
            total_rss, total_pss = total_rss + rss, total_pss + pss
        self.peak_rss, self.peak_pss = max(self.peak_rss, total_rss), max(self.peak_pss, total_pss)

    def memory(self) -> dict[str, float]:
        """Peak memory in MB: of all watched trees together, and the mean and max of each one's."""
        with self._lock:
            rss, pss = list(self.worker_rss.values()) or [0], list(self.worker_pss.values()) or [0]
            return {
                "peak_rss_mb": self.peak_rss / MB, "peak_pss_mb": self.peak_pss / MB,
                "peak_rss_mb_per_worker": sum(rss) / len(rss) / MB,
                "peak_pss_mb_per_worker": sum(pss) / len(pss) / MB,
                "max_rss_mb_one_worker": max(rss) / MB, "max_pss_mb_one_worker": max(pss) / MB,
            }  # fmt: skip

    def close(self) -> None:
        """Stop sampling."""
        self.stop.set()
        self.join(timeout=5)


class Load:
    """A closed loop of jobs: keeps ``backlog`` outstanding, counts completions."""

    def __init__(self, b: Bench, producer: Celery, strategy: str, backlog: int, cap: int) -> None:
        self.b, self.producer, self.strategy, self.backlog, self.cap = b, producer, strategy, backlog, cap
        self.emails = [e.text for e in load_emails()]
        self.outstanding: list[str] = []
        self.provider_of: dict[str, str] = {}
        self.done = self.failed = self.sent = 0

    def step(self) -> None:
        """Top up the backlog, collect finished jobs, pause one poll interval."""
        while len(self.outstanding) < self.backlog and self.sent < self.cap:
            kwargs = job_kwargs(self.strategy, self.sent, self.emails[self.sent % len(self.emails)])
            job = self.producer.send_task("quorum.extract", kwargs=kwargs).id
            self.outstanding.append(job)
            self.provider_of[job] = kwargs["providers"][0]
            self.sent += 1
        self._poll()
        time.sleep(POLL_S)

    def _poll(self) -> None:
        still = []
        for job, status in zip(self.outstanding, statuses(self.b, self.outstanding), strict=True):
            if status in FINISHED:
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
        self.log, self.processes = LogTail(path), processes
        self.seen: set[tuple[str, str]] = set()

    @classmethod
    def of(cls, b: Bench, name: str, pool: str, concurrency: int) -> Warmth:
        """The warmth of ``b``'s worker ``name`` (one process per slot under prefork)."""
        return cls(b.workdir / f"{name}.log", concurrency if pool == "prefork" else 1)

    def warm(self, provider_of: dict[str, str]) -> bool:
        """True when each of the pool's processes has finished a call to each provider."""
        for proc, job, tail in _CALL_DONE.findall(self.log.read().decode(errors="replace")):
            provider = provider_of.get(job) if tail == "h0" else THREE[int(tail[1:])]
            if provider:
                self.seen.add((proc, provider))
        procs = {proc for proc, _ in self.seen}
        return len(procs) >= self.processes and len(self.seen) >= len(procs) * len(THREE)


def warm_up(b: Bench, load: Load, warmths: list[Warmth], min_done: int, limit: float = WARM_LIMIT_S) -> float:
    """Run the loop against instant providers until every ``warmths`` is warm and ``min_done``
    more jobs have finished (imports, SDK clients, connections); the seconds it took."""
    t0, done0 = time.monotonic(), load.done
    set_latency(b, 0.0, 0.0)
    while time.monotonic() < t0 + limit and not (
        load.done - done0 >= min_done and all(w.warm(load.provider_of) for w in warmths)
    ):
        load.run_for(0.25)
    return time.monotonic() - t0


def window_for(window: float, min_jobs: int, slots: int) -> float:
    """``window`` s, or longer where ``slots`` busy on 500 ms calls would finish fewer than
    ``min_jobs`` jobs in it, in whole provider latencies (see :func:`count_window`)."""
    latency = LATENCY_MS / 1000
    return max(window, math.ceil(min_jobs / slots) * latency)


def _cpu(pids: list[int]) -> float:
    return sum(tree_cpu(p) for p in pids)


def count_window(b: Bench, load: Load, pids: list[int], sampler: Sampler, window: float) -> dict[str, Any]:
    """Switch to the benchmark latency, ramp up (every job sent before the switch done, plus
    :data:`FILL_LATENCIES` latencies), then count jobs, calls, errors and CPU over ``window`` s.

    After the ramp the slots start their calls nearly together, so completions come in waves
    one latency apart (blurring as latencies vary): a window that starts half a latency after a
    wave and lasts whole latencies has its edges between waves, not on them."""
    set_latency(b, LATENCY_MS, SIGMA)
    load.ramp(RAMP_LIMIT_S)
    load.run_for(FILL_LATENCIES * LATENCY_MS / 1000)
    t0, busy0 = time.monotonic(), machine_busy()  # together: /proc scans below take a while
    (calls0, errors0), done0, failed0, cpu0 = counts(b), load.done, load.failed, _cpu(pids)
    sampler.counting = True
    load.run_for(window)
    t1, busy1 = time.monotonic(), machine_busy()
    (calls1, errors1), done1, failed1, cpu1 = counts(b), load.done, load.failed, _cpu(pids)
    sampler.counting = False
    span, jobs, cpu = t1 - t0, done1 - done0, cpu1 - cpu0
    return {
        "window_s": span, "jobs_s": jobs / span, "calls_s": (calls1 - calls0) / span,
        "cpu_ms_per_job": cpu * 1000 / jobs if jobs else None, "cpu_cores": cpu / span,
        "machine_busy": (busy1 - busy0) / (span * (os.cpu_count() or 1)),
        "window_jobs": jobs, "window_failed": failed1 - failed0, "window_errors": errors1 - errors0,
        "peak_in_flight": sampler.peak_in_flight,
    }  # fmt: skip


def wind_down(b: Bench, load: Load, producer: Celery) -> int:
    """Drain the loop, stop every worker, empty the queue and reset the emulator and Quorum's
    state for the next configuration; the provider faults served over the whole run."""
    set_latency(b, 0.0, 0.0)  # the jobs still out finish at once: nothing is timed any more
    load.drain(DRAIN_S)
    # Drained, so nothing is lost: KILL, as even a cold shutdown (QUIT) of a few busy workers
    # takes seconds, and the broker is private to this run and purged next.
    b.stop_workers(signal.SIGKILL)
    producer.control.purge()
    errors = counts(b)[1]
    b.emulator.reset()
    b.reset_state()
    return errors
