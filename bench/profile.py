"""Where a worker's CPU goes, per job: py-spy samples one threads worker (c=8, 8 jobs in flight,
providers at 0 ms) while it runs a batch of failover jobs and then a batch of consensus-of-3
jobs; each sample is filed under the first category its stack matches, innermost frame first,
and the shares are scaled to the worker's measured CPU per job (/proc).

Only the thread holding the GIL is sampled (``py-spy --gil``): a pool thread blocked in a socket
call (a Redis reply, a provider's answer) releases the GIL and costs no CPU, and sampling it as
running filed up to 70 % of the samples under the Redis client in earlier runs of this profile.
Needs py-spy (``pip install py-spy``) and permission to ptrace the worker; without them the
section says so. Sampling costs the worker a little CPU itself; the shares are what to read.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import Bench, quiet_profile
from bench.load import Load, job_kwargs, producer_for
from bench.proc import tree_cpu
from bench.report import Section, cli
from bench.stats import table
from orchestration.data import load_emails

CONCURRENCY, IN_FLIGHT, RATE_HZ = 8, 8, 250
STRATEGIES = {"failover": "failover, 1 provider", "consensus": "consensus of 3"}
#: (category, substrings of a frame, "file (function)" as py-spy prints it); the innermost
#: frame that matches any rule names the sample's category; rules are tried in this order.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("JSON encode/decode (json, kombu.utils.json)", ("json/encoder.py", "json/decoder.py", "json/__init__.py",
                                                     "kombu/utils/json.py", "orjson")),
    ("pydantic validate/dump", ("pydantic",)),
    ("logging", ("logging/__init__.py", "celery/utils/log.py")),
    ("message MAC (hmac, hashlib)", ("hmac.py", "workers/signing.py")),
    # py-spy names a frame by its last two path parts ("genai/models.py"); the SDKs ship their
    # own forks of httpx and httpcore ("httpx2/", "httpcore2/"); google-genai retries by tenacity.
    ("provider SDK + HTTP (openai, anthropic, google-genai, httpx, httpcore)",
     ("openai/", "anthropic/", "genai/", "httpx", "httpcore", "h11/", "ssl.py", "tenacity/")),
    ("Redis client (redis-py: commands, replies, sockets)", ("redis/",)),
    ("Celery task events (Flower)", ("celery/events/",)),
    ("Celery/kombu: receive, ack, publish, result backend", ("celery/", "kombu/", "billiard/", "amqp/",
                                                            "vine/", "workers/transport.py")),
    ("Quorum domain (orchestration/)", ("orchestration/",)),
    ("Quorum tasks (workers/)", ("workers/",)),
]  # fmt: skip
OTHER = "other (interpreter, threading, stdlib)"


def classify(stack: str) -> str:
    """The category of one collapsed py-spy stack (``frame;frame;...``, outermost first)."""
    for frame in reversed(stack.split(";")):
        for name, needles in RULES:
            if any(n in frame for n in needles):
                return name
    return OTHER


REDIS = "Redis client (redis-py: commands, replies, sockets)"


def caller(stack: str, needle: str = "redis/") -> str:
    """The innermost frame of ``stack`` outside ``needle``'s package and the stdlib: who called it."""
    for frame in reversed(stack.split(";")):
        if needle not in frame and "/python3.11/" not in frame.replace("site-packages", "") and frame:
            return frame.split(" (")[0] + " (" + frame.split(" (")[-1].split("/")[-1]
    return "?"


def collapsed(path: Path) -> tuple[Counter[str], Counter[str]]:
    """Samples per category from a py-spy ``--format raw`` file, and the Redis samples per caller."""
    out: Counter[str] = Counter()
    callers: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            cat = classify(stack)
            out[cat] += int(n)
            if cat == REDIS:
                callers[caller(stack)] += int(n)
    return out, callers


def _record(b: Bench, pid: int, strategy: str, n: int, workdir: Path) -> dict[str, Any]:
    """Run ``n`` jobs of ``strategy`` under py-spy; samples by category and CPU per job."""
    producer = producer_for(b)
    raw = workdir / f"profile-{strategy}.txt"
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--format", "raw", "--gil",
         "--output", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # py-spy attached
        load = Load(b, producer, strategy, backlog=IN_FLIGHT, cap=n)
        cpu0 = tree_cpu(pid)
        while load.sent < n:
            load.step()
        load.drain(120.0)
        time.sleep(0.3)
        cpu = tree_cpu(pid) - cpu0
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        spy.wait(30)
        producer.close()
    samples, callers = collapsed(raw) if raw.exists() else (Counter(), Counter())
    return {"jobs": load.done, "failed": load.failed, "cpu_ms_per_job": cpu * 1000 / max(load.done, 1),
            "samples": dict(samples), "redis_callers": dict(callers.most_common(12))}  # fmt: skip


def run(full: bool = False) -> Section:
    """Profile a failover batch and a consensus batch on one worker."""
    if shutil.which("py-spy") is None:
        note = "py-spy is not installed (`pip install py-spy`): no profile."
        return Section("profile", "Worker CPU profile (skipped)", note, {"skipped": True})
    sizes = {"failover": 600, "consensus": 300} if full else {"failover": 300, "consensus": 150}
    texts = [e.text for e in load_emails()]
    with Bench(workers=1, pool="threads", concurrency=CONCURRENCY, profile=quiet_profile(0.0)) as b:
        pid = b.worker_pids()[0]
        for strategy in STRATEGIES:  # warm-up: SDK clients, connections, Lua scripts
            b.run_many([job_kwargs(strategy, i, texts[i % len(texts)]) for i in range(12)], in_flight=4)
        out = {s: _record(b, pid, s, sizes[s], b.workdir) for s in STRATEGIES}
    return _section(out)


def _section(out: dict[str, dict[str, Any]]) -> Section:
    cats = [name for name, _ in RULES] + [OTHER]
    rows = []
    for cat in cats:
        row: list[Any] = [cat]
        for s in STRATEGIES:
            total = sum(out[s]["samples"].values()) or 1
            share = out[s]["samples"].get(cat, 0) / total
            row += [f"{100 * share:.1f} %", share * out[s]["cpu_ms_per_job"]]
        rows.append(row)
    rows.append(["**total (worker CPU per job, /proc)**"]
                + [x for s in STRATEGIES for x in ("100 %", out[s]["cpu_ms_per_job"])])  # fmt: skip
    heads = ["where the worker's CPU goes"]
    heads += [h for s in STRATEGIES for h in (f"{STRATEGIES[s]} share", f"{STRATEGIES[s]} ms/job")]
    md = (
        f"py-spy ({RATE_HZ} Hz, the thread holding the GIL only: `--gil`) on one threads worker "
        f"(c={CONCURRENCY}), "
        f"{IN_FLIGHT} jobs in flight, providers at 0 ms; "
        + ", ".join(f"{out[s]['jobs']} {s} jobs" for s in STRATEGIES)
        + ". Each sample is filed under the innermost frame that matches a category (so JSON "
        "called by kombu counts as JSON, the Redis client called by Quorum as Redis); ms/job = "
        "share × the worker's CPU per job over the same batch (/proc, py-spy's own overhead on the "
        "worker included).\n\n" + table(heads, rows, digits=2)
    )
    for s in STRATEGIES:
        total = sum(out[s]["samples"].values()) or 1
        per_job = out[s]["cpu_ms_per_job"]
        callers = [[name, per_job * n / total] for name, n in out[s]["redis_callers"].items()]
        md += f"\n\nRedis client time by caller, {STRATEGIES[s]} (ms/job):\n\n" + table(
            ["caller (innermost frame outside redis-py)", "ms/job"], callers, digits=2
        )
    return Section("profile", "Worker CPU profile per job", md, {"strategies": out})


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    cli(run, argv)


if __name__ == "__main__":
    main()
