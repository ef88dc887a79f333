"""Crash recovery: time from SIGKILL of the worker running a provider call to that call starting
again on another worker, with the shipped defaults (liveness window 4 s, visibility timeout 1 h).

Two workers; a one-provider failover job whose call takes longer than the whole trial; the
worker that holds the call's message (read from ``unacked_owner``) is SIGKILLed at a random
moment of its heartbeat; the clock stops when the emulator sees the call's request again. No
worker is started meanwhile (the survivor sweeps); a replacement is started between trials.
A second scenario restarts the killed worker under its own name at once (it hands back its
previous run's messages as it registers, if it starts within the window; otherwise the survivor
has already done so). The baseline is kombu's own
recovery: the visibility timeout (3600 s by default), when it is the only way back.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from typing import Any

from bench.harness import Bench, quiet_profile
from bench.report import Section, cli
from bench.stats import median, p95, table, verdict
from orchestration.data import load_emails
from workers.liveness import OWNER_KEY, Holder

PROVIDER = "claude"
#: Longer than a trial: the call is always in flight when its worker dies.
CALL_MS = 40_000.0
TARGET_MEDIAN_S, TARGET_P95_S = 5.0, 10.0


def _holder_pid(b: Bench, pids: set[int], until: float) -> int | None:
    """The pid of the worker holding the only message in flight (the call's), once held."""
    while time.monotonic() < until:
        for raw in b.redis.hvals(OWNER_KEY):
            holder = Holder.parse(raw.decode())
            if holder and holder.pid in pids:
                return holder.pid
        time.sleep(0.02)
    return None


def _wait_requests(b: Bench, count: int, until: float) -> float | None:
    """Monotonic time at which the emulator has seen ``count`` requests of the provider."""
    while time.monotonic() < until:
        if b.emulator.requests(PROVIDER) >= count:
            return time.monotonic()
        time.sleep(0.02)
    return None


def _trial(b: Bench, text: str, rng: random.Random, same_name: bool) -> float | None:
    """One crash: seconds from SIGKILL to the call's second start (None: it never restarted)."""
    b.emulator.configure(PROVIDER, latency_median_ms=CALL_MS)
    before = b.emulator.requests(PROVIDER)
    job = b.send(text=text, strategy="failover", providers=[PROVIDER], use_cache=False, deadline_s=120)
    if _wait_requests(b, before + 1, time.monotonic() + 30) is None:
        return None
    by_pid = {p.pid: n for n, p in b.procs.items() if p.poll() is None}
    pid = _holder_pid(b, set(by_pid), time.monotonic() + 10)
    if pid is None:
        return None
    # The call runs again quickly, so the survivor has a free slot for the next trial's.
    b.emulator.configure(PROVIDER, latency_median_ms=50.0)
    time.sleep(rng.uniform(0.0, 1.0))  # any phase of the victim's and the survivor's heartbeats
    name = by_pid[pid]
    proc = b.procs.pop(name)
    os.killpg(pid, signal.SIGKILL)
    killed = time.monotonic()
    proc.wait(timeout=10)
    restart = threading.Thread(target=_restart_as, args=(b, name), daemon=True)
    if same_name:
        restart.start()  # the clock runs while it starts: whoever hands the call back first counts
    again = _wait_requests(b, before + 2, killed + 60)
    if same_name:
        restart.join(timeout=90)
    job.forget()
    return None if again is None else again - killed


def _restart_as(b: Bench, name: str) -> None:
    """Start a worker under ``name`` again, as a supervisor restarting a crashed process would."""
    serial = b._serial
    b._serial = int(name.removeprefix("bench").split("-")[0]) - 1
    try:
        b.start_workers(1, b.pool, b.concurrency)  # -n bench<serial>-<pid>@host: the same node name
    finally:
        b._serial = max(serial, b._serial)


def run(full: bool) -> Section:
    rng = random.Random(11)
    trials = 20 if full else 8
    text = load_emails()[0].text
    survivor: list[float] = []
    restarted: list[float] = []
    lost = 0
    profile = quiet_profile(20.0)
    profile["providers"] = {
        PROVIDER: {"latency_median_ms": CALL_MS, "latency_sigma": 0.0, "latency_max_ms": 2 * CALL_MS}
    }
    with Bench(workers=2, concurrency=8, profile=profile, timeout_s=120) as b:
        liveness_s = b.settings.liveness_window_s
        visibility_s = b.settings.visibility_timeout_s
        for i in range(trials):
            same_name = i % 2 == 1
            took = _trial(b, text, rng, same_name)
            if took is None:
                lost += 1
            else:
                (restarted if same_name else survivor).append(took)
            if len(b.procs) < 2:
                b.start_workers(2 - len(b.procs), b.pool, b.concurrency)  # for the next trial
    data: dict[str, Any] = {
        "trials": trials,
        "lost": lost,
        "liveness_window_s": liveness_s,
        "visibility_timeout_s": visibility_s,
        "survivor_s": survivor,
        "restarted_s": restarted,
        "survivor_median_s": median(survivor),
        "survivor_p95_s": p95(survivor),
        "restarted_median_s": median(restarted),
        "restarted_p95_s": p95(restarted),
        "baseline_s": float(visibility_s),
        "speedup": visibility_s / median(survivor) if survivor else float("nan"),
    }
    met = bool(survivor) and lost == 0
    met = met and data["survivor_median_s"] <= TARGET_MEDIAN_S and data["survivor_p95_s"] <= TARGET_P95_S
    data["target_met"] = met
    rows = [
        ["SIGKILL, another worker alive, none started", len(survivor), median(survivor), p95(survivor)],
        ["SIGKILL, restarted under its name at once", len(restarted), median(restarted), p95(restarted)],
        ["baseline: kombu's visibility timeout only", "-", float(visibility_s), float(visibility_s)],
    ]
    md = "\n\n".join(
        [
            f"Shipped defaults: liveness window {liveness_s:g} s, visibility timeout {visibility_s} s. "
            f"A provider call of {CALL_MS / 1000:.0f} s is in flight on the killed worker; recovery is "
            "the time from SIGKILL to that call reaching the provider again.",
            table(["scenario", "n", "median s", "p95 s"], rows, digits=2),
            f"Calls never restarted within 60 s: {lost}. Target (survivor): median ≤ {TARGET_MEDIAN_S:g} s, "
            f"p95 ≤ {TARGET_P95_S:g} s: {verdict(met)}; {data['speedup']:.0f}x sooner than the "
            "visibility timeout alone.",
        ]
    )
    title = (
        f"recovery: SIGKILL → call running again, median {median(survivor):.1f} s, p95 {p95(survivor):.1f} s"
    )
    return Section("recovery", title, md, data)


def main(argv: list[str] | None = None) -> None:
    cli(run, argv)


if __name__ == "__main__":
    main()
