"""Quorum vs LiteLLM's ``Router``, in one run against one emulator, on the same extraction request
(forced tool use for Claude, a JSON schema for OpenAI and Gemini), with the same three deployments
in the same fallback chain (``claude`` → ``openai`` → ``gemini``):

1. failover latency with the primary down, with the first two down (double failover) and direct,
   with all up: one request at a time, the two systems' requests interleaved in shuffled rounds;
   median/p95 and Quorum/LiteLLM ratios;
2. throughput at equal in-flight concurrency: N requests always outstanding, one Quorum worker
   (threads pool) vs the Router's ``acompletion`` with N tasks in one process; jobs/s;
3. loss when the process is SIGKILLed mid-flight: Quorum's worker (a new one started at once,
   shipped defaults) vs a child process running the Router; answered / sent.

LiteLLM is an optional extra (``pip install -e ".[bench]"``); without it the section says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from celery import Celery

from bench.harness import FAKE_KEYS, Bench, quiet_profile
from bench.load import FINISHED, Finished, counts, in_flight, producer_for, set_latency, statuses
from bench.proc import tree_cpu
from bench.report import Section, cli
from bench.stats import fmt, median, ratio, summary_ms, table
from orchestration.config import ProviderConfig, ProviderKind
from orchestration.data import load_emails
from orchestration.prompts import EXTRACTION_SYSTEM, TOOL_NAME, extraction_prompt
from orchestration.schemas import EMAIL_ENTITIES, output_schema
from stack.local import stop_group

ROOT = Path(__file__).resolve().parents[1]
PRIMARY, SECONDARY, TERTIARY = "claude", "openai", "gemini"
CHAIN = [PRIMARY, SECONDARY, TERTIARY]  # the fallback order of part 1
#: name -> (provider kind, also LiteLLM's provider prefix; model), as in the bench config
DEPLOYMENTS: dict[str, tuple[ProviderKind, str]] = {
    "claude": ("anthropic", "claude-sonnet-4-6"),
    "openai": ("openai", "gpt-4.1-mini"),
    "gemini": ("gemini", "gemini-2.5-flash"),
}
FIELDS = set(EMAIL_ENTITIES["properties"])
MAX_TOKENS = 1024  # what Quorum's Anthropic adapter sends; LiteLLM sends it to all three

FAILOVER_MS = 20.0  # part 1: fixed provider latency; the down primary answers 503 at once
LOAD_MS, LOAD_SIGMA = 300.0, 0.25  # part 2
KILL_MS, KILL_SIGMA = 1000.0, 0.4  # part 3
IN_FLIGHT = 32  # part 2
#: part 2, consensus of 3: 48 provider calls in flight, within the worker's threads (a call holds
#: one for its whole latency), as LiteLLM's process has no such bound
CONSENSUS_IN_FLIGHT = 16
WORKER_CONCURRENCY = 64  # ≥ in-flight requests (the job's own extract task needs threads too)
WAIT_S = 0.05  # part 2: the producer's longest wait for a published result
SETTLE_S = 1.0  # part 2: after the last answer, until a job's late calls (early quorum) are done
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm")
SKIPPED_MD = (
    "The peer comparison with LiteLLM's Router did not run: LiteLLM is not installed. Install the "
    'optional bench extra (`pip install -e ".[bench]"`) and run `quorum bench --only peer` (or '
    "`python -m bench.peer`)."
)


# --------------------------------------------------------------------------- LiteLLM set-up


def import_litellm() -> ModuleType:
    """LiteLLM, quiet and offline: the bundled model map (no fetch), no telemetry, errors only.

    Emulator compatibility: LiteLLM asks Claude models whose map entry says
    ``supports_native_structured_output`` for Anthropic's native ``output_format``, which the
    emulator does not speak (it answers free text). The override below makes LiteLLM send the
    forced tool call instead: the request Quorum's Anthropic adapter sends.
    """
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["LITELLM_LOG"] = "ERROR"
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    for name in LITELLM_LOGGERS:  # the Router logs every fallback it takes at ERROR
        logging.getLogger(name).setLevel(logging.CRITICAL)
    _, model = DEPLOYMENTS["claude"]
    flags = {"supports_native_structured_output": False, "litellm_provider": "anthropic", "mode": "chat"}
    litellm.register_model({model: flags})
    return litellm


def router_config(emulator_url: str) -> dict[str, Any]:
    """``Router`` keyword arguments: the three deployments at the emulator, one try each, each
    falling back to the others in the order Quorum gets for that primary (:func:`_order`), no
    cooldowns (like Quorum's breaker held closed here: a down provider is called).

    Each ``api_base`` is the URL Quorum's adapters use (:meth:`ProviderConfig.effective_base_url`),
    plus ``/v1beta`` for Gemini: Google's SDK adds the API version itself, LiteLLM builds
    ``{api_base}/models/{model}:generateContent`` without one."""
    model_list = []
    for name, (kind, model) in DEPLOYMENTS.items():
        config = ProviderConfig(kind=kind, model=model)
        base = config.effective_base_url(name, emulator_url)
        params = {
            "model": f"{kind}/{model}",
            "api_base": f"{base}/v1beta" if kind == "gemini" else base,
            "api_key": FAKE_KEYS[str(config.key_env())],
            "max_retries": 0,
            "timeout": 10.0,
        }
        model_list.append({"model_name": name, "litellm_params": params})
    return {
        "model_list": model_list,
        "fallbacks": [{order[0]: order[1:]} for order in map(_order, range(len(CHAIN)))],
        "num_retries": 0,
        "disable_cooldowns": True,
        "timeout": 10.0,
    }


def litellm_request(text: str) -> dict[str, Any]:
    """The extraction request Quorum sends, in OpenAI form: LiteLLM turns the JSON schema into a
    forced tool for Anthropic, passes it as ``response_format`` to OpenAI and as
    ``generationConfig.response_json_schema`` to Gemini."""
    fmt_ = {
        "type": "json_schema",
        "json_schema": {"name": TOOL_NAME, "schema": output_schema(EMAIL_ENTITIES), "strict": True},
    }
    messages = [
        {"role": "system", "content": EXTRACTION_SYSTEM},
        {"role": "user", "content": extraction_prompt(text, EMAIL_ENTITIES)},
    ]
    return {"messages": messages, "response_format": fmt_, "max_tokens": MAX_TOKENS}


def litellm_answerer(response: Any) -> str | None:
    """Which deployment answered with a complete extraction (None: no usable answer)."""
    try:
        data = json.loads(response.choices[0].message.content)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    if not isinstance(data, dict) or set(data) != FIELDS:
        return None
    model = str(getattr(response, "model", ""))
    return next((n for n, d in DEPLOYMENTS.items() if d[1] in model), None)


def quorum_answerer(result: Any) -> str | None:
    """Which provider answered a Quorum job (None: failed or unexpected)."""
    if not isinstance(result, dict):
        return None
    return result.get("chosen") if result.get("chosen") in CHAIN else None


def _order(i: int) -> list[str]:
    """The chain rotated by ``i``: claude → openai → gemini, openai → gemini → claude, ... (the
    load parts rotate the primary per request, so every SDK path is exercised)."""
    k = i % len(CHAIN)
    return CHAIN[k:] + CHAIN[:k]


# --------------------------------------------------------------------------- 1. failover latency

#: case -> (providers down, the provider expected to answer)
DOWN: dict[str, tuple[list[str], str]] = {
    "direct": ([], PRIMARY),
    "failover": ([PRIMARY], SECONDARY),
    "double": ([PRIMARY, SECONDARY], TERTIARY),
}
SYSTEMS = ("quorum", "litellm")
CASES = [(system, case) for system in SYSTEMS for case in DOWN]


def _failover(b: Bench, router: Any, emails: list[str], rounds: int, warm: int, seed: int) -> dict[str, Any]:
    """``rounds`` shuffled rounds of the six cases; the providers are taken down (or up) untimed
    before each request. Only requests answered by the expected provider count."""
    set_latency(b, FAILOVER_MS, 0.0)
    rng = random.Random(seed)
    lat: dict[tuple[str, str], list[float]] = {c: [] for c in CASES}
    anomalies = {f"{s}/{c}": 0 for s, c in CASES}
    downs_before = {p: b.emulator.errors(p).get("down", 0) for p in CHAIN}
    for r in range(warm + rounds):
        cases = list(CASES)
        rng.shuffle(cases)
        text = emails[r % len(emails)]
        for system, case in cases:
            down, expected = DOWN[case]
            for p in CHAIN:
                b.emulator.set_down(p, p in down)
            if system == "quorum":
                seconds, result = b.timed(text=text, strategy="failover", providers=CHAIN, use_cache=False)
                who = quorum_answerer(result)
            else:
                start = time.perf_counter()
                try:
                    who = litellm_answerer(router.completion(model=PRIMARY, **litellm_request(text)))
                except Exception:  # counted as an anomaly, never fatal
                    who = None
                seconds = time.perf_counter() - start
            if r < warm:
                continue
            if who == expected:
                lat[(system, case)].append(seconds)
            else:
                anomalies[f"{system}/{case}"] += 1
    for p in CHAIN:
        b.emulator.set_down(p, False)
    downs = {p: b.emulator.errors(p).get("down", 0) - downs_before[p] for p in CHAIN}
    per_case = len(SYSTEMS) * (warm + rounds)  # requests sent per case, warm-up included
    out: dict[str, Any] = {
        "latency_ms": FAILOVER_MS,
        "rounds": rounds,
        "anomalies": anomalies,
        # each request should call each down provider once: 1.00 when nothing is retried or skipped
        "primary_calls_per_failover": downs[PRIMARY] / (2 * per_case),
        "secondary_calls_per_double": downs[SECONDARY] / per_case,
    }
    for system in SYSTEMS:
        d, f, f2 = (summary_ms(lat[(system, c)]) for c in DOWN)
        out[system] = {
            "direct": d,
            "failover": f,
            "double": f2,
            "cost_median_ms": f["median_ms"] - d["median_ms"],
            "cost_p95_ms": f["p95_ms"] - d["p95_ms"],
            "double_cost_median_ms": f2["median_ms"] - d["median_ms"],
        }
    q, li = out["quorum"], out["litellm"]
    out["ratio"] = {
        "direct_median": ratio(q["direct"]["median_ms"], li["direct"]["median_ms"]),
        "direct_p95": ratio(q["direct"]["p95_ms"], li["direct"]["p95_ms"]),
        "failover_median": ratio(q["failover"]["median_ms"], li["failover"]["median_ms"]),
        "failover_p95": ratio(q["failover"]["p95_ms"], li["failover"]["p95_ms"]),
        "double_median": ratio(q["double"]["median_ms"], li["double"]["median_ms"]),
        "cost_median": ratio(q["cost_median_ms"], li["cost_median_ms"]),
    }
    for key, case in (
        ("samples_ms", "failover"),
        ("direct_samples_ms", "direct"),
        ("double_samples_ms", "double"),
    ):
        out[key] = {s: [x * 1000 for x in lat[(s, case)]] for s in SYSTEMS}
    return out


# --------------------------------------------------------------------------- 2. throughput


def _send(producer: Celery, text: str, order: list[str], kind: str = "failover") -> str:
    """A failover job along ``order``, or a consensus-of-3 job over the three providers."""
    strategy = "failover" if kind == "failover" else "consensus"
    kwargs = {"text": text, "strategy": strategy, "providers": order, "use_cache": False}
    return str(producer.send_task("quorum.extract", kwargs=kwargs).id)


async def _answered(router: Any, emails: list[str], i: int, kind: str = "failover") -> bool:
    """Request ``i`` through the Router (primary rotated by :func:`_order`): a usable answer?
    For ``consensus``: one request to each deployment at once, all three usable."""
    models = [_order(i)[0]] if kind == "failover" else CHAIN
    request = litellm_request(emails[i % len(emails)])
    try:
        responses = await asyncio.gather(*(router.acompletion(model=m, **request) for m in models))
    except Exception:  # counted as failed, never fatal
        return False
    return all(litellm_answerer(r) is not None for r in responses)


def _window(
    done: list[tuple[float, float]],
    w0: float,
    w1: float,
    failed: int,
    unfinished: int,
    cpu_s: float,
    run_cpu_s: float,
) -> dict[str, Any]:
    """One load run's figures from its ``(finished at, latency s)`` answers, counted in ``[w0, w1)``;
    ``run_cpu_s``: the CPU of the whole run (warm-up and drain too), for CPU per answered job."""
    in_window = [lat for at, lat in done if w0 <= at < w1]
    return {
        "jobs_s": len(in_window) / (w1 - w0),
        "completed_in_window": len(in_window),
        "failed": failed,
        "unfinished": unfinished,
        "cpu_s_per_s": cpu_s / (w1 - w0),
        "run_cpu_s": run_cpu_s,
        "run_answered": len(done),
        "latency": summary_ms(in_window),
        "samples_ms": [x * 1000 for x in in_window],
    }


def _quorum_load(
    b: Bench, producer: Celery, emails: list[str], n: int, warm_s: float, window_s: float, kind: str
) -> dict[str, Any]:
    """A closed loop keeping ``n`` jobs outstanding, each answer seen when it is published (as
    ``AsyncResult.get()`` sees it); completions counted over ``window_s`` after ``warm_s``; then
    drain (sending no more)."""
    outstanding: dict[str, float] = {}
    done: list[tuple[float, float]] = []  # (finished at, latency s)
    failed = sent = 0
    pid = b.worker_pids()[0]
    finished = Finished(b)
    t0 = time.monotonic()
    w0, w1 = t0 + warm_s, t0 + warm_s + window_s
    cpu0: float | None = None
    cpu1: float | None = None
    start_cpu = tree_cpu(pid)
    try:
        while True:
            now = time.monotonic()
            if now < w1:
                while len(outstanding) < n:
                    job = _send(producer, emails[sent % len(emails)], _order(sent), kind)
                    outstanding[job] = time.monotonic()
                    sent += 1
            elif not outstanding or now > w1 + 15:
                break
            if cpu0 is None and now >= w0:
                cpu0 = tree_cpu(pid)
            if cpu1 is None and now >= w1:
                cpu1 = tree_cpu(pid)
            for job, status in finished.wait(set(outstanding), timeout=WAIT_S):
                started = outstanding.pop(job)
                if status == "SUCCESS":
                    now = time.monotonic()
                    done.append((now, now - started))
                else:
                    failed += 1
    finally:
        finished.close()
    time.sleep(SETTLE_S)  # a consensus job's late call still runs after its answer: count it too
    run_cpu = tree_cpu(pid) - start_cpu
    return _window(done, w0, w1, failed, len(outstanding), (cpu1 or 0.0) - (cpu0 or 0.0), run_cpu)


async def _litellm_load(
    router: Any, emails: list[str], n: int, warm_s: float, window_s: float, kind: str
) -> dict[str, Any]:
    """``n`` tasks, each sending its next request as soon as the last one returns."""
    done: list[tuple[float, float]] = []
    bad = [0]
    t0 = time.monotonic()
    w0, w1 = t0 + warm_s, t0 + warm_s + window_s
    cpu: dict[str, float] = {}

    async def client(k: int) -> None:
        i = k
        while time.monotonic() < w1:
            start = time.monotonic()
            ok = await _answered(router, emails, i, kind)
            now = time.monotonic()
            if ok:
                done.append((now, now - start))
            else:
                bad[0] += 1
            i += n

    async def clock() -> None:
        await asyncio.sleep(max(0.0, w0 - time.monotonic()))
        cpu["w0"] = time.process_time()
        await asyncio.sleep(max(0.0, w1 - time.monotonic()))
        cpu["w1"] = time.process_time()

    start_cpu = time.process_time()
    await asyncio.gather(clock(), *(client(k) for k in range(n)))
    run_cpu = time.process_time() - start_cpu
    return _window(done, w0, w1, bad[0], 0, cpu["w1"] - cpu["w0"], run_cpu)


def _throughput(
    b: Bench,
    router: Any,
    emails: list[str],
    n: int,
    warm_s: float,
    window_s: float,
    rounds: int,
    kind: str = "failover",
) -> dict[str, Any]:
    """``rounds`` of each system in alternating order (Q L, L Q, ...), ``kind`` (``failover``: one
    answering call per job; ``consensus``: three calls per job) at ``n`` jobs in flight."""
    set_latency(b, LOAD_MS, LOAD_SIGMA)
    producer = producer_for(b)
    loop = asyncio.new_event_loop()  # one for every round: the Router's async clients live in it
    runs: dict[str, list[dict[str, Any]]] = {"quorum": [], "litellm": []}
    try:
        for r in range(rounds):
            for system in SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]:  # ABBA
                if system == "quorum":
                    runs[system].append(_quorum_load(b, producer, emails, n, warm_s, window_s, kind))
                else:
                    runs[system].append(
                        loop.run_until_complete(_litellm_load(router, emails, n, warm_s, window_s, kind))
                    )
    finally:
        producer.close()
        loop.close()
    samples = {s: [v for x in rs for v in x["samples_ms"]] for s, rs in runs.items()}
    out: dict[str, Any] = {
        "kind": kind,
        "in_flight": n,
        "latency_ms": LOAD_MS,
        "sigma": LOAD_SIGMA,
        "warm_s": warm_s,
        "window_s": window_s,
        "rounds": rounds,
        "ideal_jobs_s": n / (LOAD_MS / 1000),
    }
    for system, rs in runs.items():
        out[system] = {
            "jobs_s": median([x["jobs_s"] for x in rs]),
            "cpu_s_per_s": median([x["cpu_s_per_s"] for x in rs]),
            "failed": sum(x["failed"] for x in rs),
            "unfinished": sum(x["unfinished"] for x in rs),
            "latency": summary_ms([v / 1000 for v in samples[system]]),
            "runs": [{k: v for k, v in x.items() if k != "samples_ms"} for x in rs],
        }
    out["ratio"] = ratio(out["quorum"]["jobs_s"], out["litellm"]["jobs_s"])
    out["samples_ms"] = samples
    return out


# --------------------------------------------------------------------------- 3. SIGKILL mid-flight


def _quorum_kill(
    b: Bench, emails: list[str], m: int, kill_after: float, wait_s: float, meanwhile: Callable[[], int]
) -> dict[str, Any]:
    """Send ``m`` jobs, SIGKILL the worker ``kill_after`` s later, start a new worker (another node
    name) as soon as the LiteLLM side is done, count the jobs that end with an answer. The new
    worker hands back the dead one's un-acked tasks once the dead one's liveness has lapsed
    (``workers.liveness``; shipped defaults, no visibility timeout involved).

    ``meanwhile`` runs while no worker exists (the LiteLLM side) and returns the provider calls
    it made, which are not Quorum's."""
    producer = producer_for(b)
    calls0 = counts(b)[0]
    try:
        ids = [_send(producer, emails[i % len(emails)], _order(i)) for i in range(m)]
    finally:
        producer.close()
    time.sleep(kill_after)
    calls_at_kill = in_flight(b)
    b.stop_workers(signal.SIGKILL)
    killed_at = time.monotonic()
    before = statuses(b, ids).count("SUCCESS")
    others = meanwhile()
    b.start_workers(1, "threads", WORKER_CONCURRENCY)  # a replacement, at once
    restarted_s = time.monotonic() - killed_at
    until = time.monotonic() + wait_s
    states: list[str | None] = []
    while time.monotonic() < until:
        states = statuses(b, ids)
        if all(s in FINISHED for s in states):
            break
        time.sleep(0.1)
    answered, failed = states.count("SUCCESS"), states.count("FAILURE")
    calls = counts(b)[0] - calls0 - others
    return {
        "sent": m,
        "answered": answered,
        "answered_before_kill": before,
        "failed": failed,
        "unanswered": m - answered - failed,
        "provider_calls_in_flight_at_kill": calls_at_kill,
        "provider_calls": calls,
        "new_worker_after_s": restarted_s,
        "all_done_after_kill_s": time.monotonic() - killed_at,
    }


CHILD = "import bench.peer as p; p.child_main()"


def child_main() -> None:
    """The LiteLLM side of part 3, run in a child process: stdin gives the emulator URL, the
    emails and ``m``; one warm-up request per deployment, then ``m`` requests at once, one
    ``ANSWER`` line per usable answer as it arrives."""
    spec = json.loads(sys.stdin.readline())
    litellm = import_litellm()
    router = litellm.Router(**router_config(spec["url"]))
    emails: list[str] = spec["emails"]

    async def one(i: int) -> None:
        print(f"{'ANSWER' if await _answered(router, emails, i) else 'FAILED'} {i}", flush=True)

    async def main() -> None:
        await asyncio.gather(*(router.acompletion(model=p, **litellm_request(emails[0])) for p in CHAIN))
        print("READY", flush=True)
        tasks = [asyncio.ensure_future(one(i)) for i in range(spec["m"])]
        await asyncio.sleep(0)  # every request started
        print("SENT", flush=True)
        await asyncio.gather(*tasks)
        print("DONE", flush=True)

    asyncio.run(main())


def _litellm_kill(b: Bench, emails: list[str], m: int, kill_after: float) -> dict[str, Any]:
    """A child process with the Router and ``m`` requests in flight, SIGKILLed ``kill_after`` s
    after it sent them: the answers it printed before dying are all that is delivered."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    errors = b.workdir / "litellm-child.log"
    with errors.open("wb") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
            text=True,
        )
    lines: list[tuple[float, str]] = []
    sent, finished = threading.Event(), threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic(), line.strip()))
            if line.startswith("SENT"):
                sent.set()
        finished.set()

    reader = threading.Thread(target=read, daemon=True, name="bench-peer-child")
    reader.start()
    calls0 = counts(b)[0]
    killed = False
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"url": b.emulator.url, "emails": emails, "m": m}) + "\n")
        proc.stdin.flush()
        if not sent.wait(60):
            tail = errors.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the LiteLLM child did not send its requests:\n{tail}")
        warm_calls = counts(b)[0] - calls0
        time.sleep(kill_after)
        calls_at_kill = in_flight(b)
        killed = proc.poll() is None
    finally:
        stop_group(proc, signal.SIGKILL)
    finished.wait(5)
    answered = sum(1 for _, line in lines if line.startswith("ANSWER"))
    failed = sum(1 for _, line in lines if line.startswith("FAILED"))
    calls = counts(b)[0] - calls0 - warm_calls
    return {
        "sent": m,
        "answered": answered,
        "failed": failed,
        "unanswered": m - answered - failed,
        "provider_calls_in_flight_at_kill": calls_at_kill,
        "provider_calls": calls,
        "warm_up_calls": warm_calls,
        "killed_mid_flight": killed and not any(line == "DONE" for _, line in lines),
    }


def _kill(b: Bench, emails: list[str], m: int, kill_after: float) -> dict[str, Any]:
    set_latency(b, KILL_MS, KILL_SIGMA)
    out: dict[str, Any] = {
        "latency_ms": KILL_MS,
        "sigma": KILL_SIGMA,
        "kill_after_s": kill_after,
        "visibility_timeout_s": b.settings.visibility_timeout_s,
        "liveness_window_s": b.settings.liveness_window_s,
    }

    def litellm_side() -> int:
        out["litellm"] = _litellm_kill(b, emails, m, kill_after)
        return int(out["litellm"]["provider_calls"] + out["litellm"]["warm_up_calls"])

    out["quorum"] = _quorum_kill(b, emails, m, kill_after, wait_s=30.0, meanwhile=litellm_side)
    return out


# --------------------------------------------------------------------------- run and report


def run(full: bool = False) -> Section:
    """All three parts against one Valkey, one emulator and one Quorum worker (replaced in part 3)."""
    try:
        litellm = import_litellm()
    except ImportError:
        title = "Peer: Quorum vs LiteLLM Router (skipped)"
        return Section("peer", title, SKIPPED_MD, {"skipped": True}, notice=SKIPPED_MD)
    rounds, (load_rounds, warm, window), m = (150, (4, 2.0, 10.0), 200) if full else (20, (4, 1.5, 3.0), 40)
    emails = [e.text for e in load_emails()[:20]]
    with Bench(
        workers=1,
        pool="threads",
        concurrency=WORKER_CONCURRENCY,
        profile=quiet_profile(FAILOVER_MS, seed=11),
        consecutive_failures=1_000_000,
        min_calls=1_000_000,
    ) as b:
        router = litellm.Router(**router_config(b.emulator.url))
        failover = _failover(b, router, emails, rounds, warm=3, seed=3)
        throughput = _throughput(b, router, emails, IN_FLIGHT, warm, window, load_rounds)
        n = CONSENSUS_IN_FLIGHT
        consensus = _throughput(b, router, emails, n, warm, window, load_rounds, "consensus")
        kill = _kill(b, emails, m, kill_after=KILL_MS / 1000)
    version = _version("litellm")
    return _section(failover, throughput, consensus, kill, version, full)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _x(value: float) -> str:
    return fmt(value, 2)


FO_HEADS = ["system", "n", "direct median ms", "direct p95 ms", "failover median ms", "failover p95 ms",
            "failover cost median ms", "failover cost p95 ms", "double failover median ms",
            "double failover p95 ms"]  # fmt: skip
LOAD_HEADS = ["system", "jobs/s (per round)", "latency median ms", "latency p95 ms", "CPU cores used",
              "CPU ms/job", "failed/unfinished"]  # fmt: skip
KILL_HEADS = ["system", "answered / sent", "answered before the kill", "provider calls in flight at the kill",
              "provider calls", "failed", "never answered"]  # fmt: skip
NAMES = {"quorum": "Quorum", "litellm": "LiteLLM Router"}


def _fo_row(name: str, s: dict[str, Any]) -> list[Any]:
    d, f, f2 = s["direct"], s["failover"], s["double"]
    return [name, d["n"], d["median_ms"], d["p95_ms"], f["median_ms"], f["p95_ms"], s["cost_median_ms"],
            s["cost_p95_ms"], f2["median_ms"], f2["p95_ms"]]  # fmt: skip


def _load_row(name: str, s: dict[str, Any]) -> list[Any]:
    rounds = ", ".join(fmt(r["jobs_s"]) for r in s["runs"])
    return [f"{name}", f"{fmt(s['jobs_s'])} ({rounds})", s["latency"]["median_ms"], s["latency"]["p95_ms"],
            fmt(s["cpu_s_per_s"], 2), cpu_ms_per_job(s), f"{s['failed']}/{s['unfinished']}"]  # fmt: skip


def _kill_row(name: str, s: dict[str, Any], before: int) -> list[Any]:
    return [name, f"{s['answered']} / {s['sent']}", before, s["provider_calls_in_flight_at_kill"],
            s["provider_calls"], s["failed"], s["unanswered"]]  # fmt: skip


def cpu_ms_per_job(s: dict[str, Any]) -> float:
    """A system's CPU per answered job over its whole rounds (warm-up and drain included), in ms.
    Not CPU in the window ÷ answers in the window: a job's CPU and its answer fall on either side
    of the window's edges, which moved a 3 s window's figure by up to ±25 % from round to round."""
    answered = sum(r["run_answered"] for r in s["runs"])
    return 1000 * sum(r["run_cpu_s"] for r in s["runs"]) / answered if answered else float("nan")


def _section(failover: dict[str, Any], load: dict[str, Any], consensus: dict[str, Any], kill: dict[str, Any],
             version: str, full: bool) -> Section:  # fmt: skip
    r = failover["ratio"]
    fo_md = table(FO_HEADS, [
        _fo_row(NAMES["quorum"], failover["quorum"]), _fo_row(NAMES["litellm"], failover["litellm"]),
        ["ratio Quorum/LiteLLM", "", _x(r["direct_median"]), _x(r["direct_p95"]), _x(r["failover_median"]),
         _x(r["failover_p95"]), _x(r["cost_median"]), "", _x(r["double_median"]), ""],
    ])  # fmt: skip
    bad = {k: v for k, v in failover["anomalies"].items() if v}
    load_md = table(LOAD_HEADS, [_load_row("Quorum (1 worker, threads)", load["quorum"]),
                                 _load_row("LiteLLM Router (asyncio)", load["litellm"])])  # fmt: skip
    cons_md = table(LOAD_HEADS, [
        _load_row("Quorum consensus of 3 (1 worker, threads)", consensus["quorum"]),
        _load_row("LiteLLM Router, 3 requests at once (asyncio)", consensus["litellm"]),
    ])  # fmt: skip
    cpu = {
        "failover_quorum_ms": cpu_ms_per_job(load["quorum"]),
        "failover_litellm_ms": cpu_ms_per_job(load["litellm"]),
        "consensus_quorum_ms": cpu_ms_per_job(consensus["quorum"]),
        "consensus_litellm_ms": cpu_ms_per_job(consensus["litellm"]),
    }
    cpu["failover_ratio"] = ratio(cpu["failover_quorum_ms"], cpu["failover_litellm_ms"])
    cpu["consensus_ratio"] = ratio(cpu["consensus_quorum_ms"], cpu["consensus_litellm_ms"])
    cpu["consensus_vs_3_requests"] = ratio(cpu["consensus_quorum_ms"], 3 * cpu["failover_litellm_ms"])
    kq, kl = kill["quorum"], kill["litellm"]
    kill_md = table(KILL_HEADS, [_kill_row(NAMES["quorum"], kq, kq["answered_before_kill"]),
                                 _kill_row(NAMES["litellm"], kl, kl["answered"])])  # fmt: skip
    md = (
        f"LiteLLM {version}, `Router` with the same three deployments and fallback chain as Quorum's "
        "job: `claude` (claude-sonnet-4-6, Anthropic Messages) falling back to `openai` "
        "(gpt-4.1-mini, Chat Completions), then to `gemini` (gemini-2.5-flash, generateContent), "
        "`num_retries=0` (one try, then the next fallback), cooldowns off (Quorum's breaker is held "
        "closed too: a down provider is really called each time). Both send the same extraction "
        "request (Quorum's system prompt and user message; a forced tool call to Claude, a "
        "`response_format` JSON schema to OpenAI, a `responseJsonSchema` to Gemini) to the same "
        "emulator in the same run. "
        "Quorum's figure is a whole job (producer → Redis → worker → provider → result → producer, "
        "output validated against the schema); LiteLLM's is an in-process call.\n\n"
        f"**1. Failover latency.** Providers at a fixed {FAILOVER_MS:.0f} ms; a down provider answers "
        f"503 at once. One request at a time, {failover['rounds']} shuffled rounds of the six cases "
        "(system × direct / failover / double failover; the providers are switched untimed before "
        "each request). Direct: all up, answered by claude; failover: claude down, answered by "
        "openai; double failover: claude and openai down, answered by gemini. Failover cost = "
        "failover − direct, same quantile.\n\n"
        f"{fo_md}\n\n"
        f"Calls to the down claude per (double) failover request: "
        f"{failover['primary_calls_per_failover']:.2f}; to the down openai per double failover: "
        f"{failover['secondary_calls_per_double']:.2f}. "
        f"Requests with an unexpected outcome (excluded): {bad or 'none'}.\n\n"
        f"**2. Throughput at {load['in_flight']} requests in flight.** Providers at {LOAD_MS:.0f} ms "
        f"(log-normal sigma {LOAD_SIGMA}); requests rotate the primary (claude-, openai-, gemini-first "
        f"in turn), all providers up. Quorum: one worker, threads pool, concurrency "
        f"{WORKER_CONCURRENCY}, a closed loop in the producer; LiteLLM: `acompletion` from "
        f"{load['in_flight']} asyncio tasks in one "
        f"process. Counted over {load['window_s']:g} s after {load['warm_s']:g} s of warm-up "
        f"({load['rounds']} rounds each in ABBA order; median, rounds in brackets). Ideal = in-flight / "
        f"latency = "
        f"{load['ideal_jobs_s']:.0f}/s. CPU: Quorum's worker process (not Valkey); LiteLLM's process; "
        "cores used is over the window, CPU ms/job over all of a system's rounds (CPU from the first "
        "request to the last answer, plus 1 s for late calls, ÷ every answer: the window's edges "
        "split jobs from their CPU).\n\n"
        f"{load_md}\n\n"
        f"Throughput ratio Quorum/LiteLLM: **×{_x(load['ratio'])}**. A Quorum job here is two Celery "
        "tasks through Redis (extract, call) with task events, results in Redis and the answer "
        "validated; a LiteLLM request is one coroutine. Latency under load includes queueing: at a "
        "fixed number in flight, latency ≈ in-flight / jobs/s. The producer learns of each answer "
        "when it is published (the notification `AsyncResult.get()` waits on), not by polling.\n\n"
        f"**2b. Consensus of 3 at {consensus['in_flight']} jobs in flight** ({3 * consensus['in_flight']} "
        "provider calls, within the worker's threads), same providers and windows. Quorum: "
        "`strategy=consensus` over the three providers (a chord: entry, three calls, the merge; "
        "early quorum as shipped, so a job may be answered after two agreeing calls while the third "
        "still runs and is still counted); LiteLLM: the same request to the three deployments at once "
        "(`asyncio.gather` of three `acompletion`), no merge.\n\n"
        f"{cons_md}\n\n"
        f"CPU per job, same run: failover **{fmt(cpu['failover_quorum_ms'], 2)} vs "
        f"{fmt(cpu['failover_litellm_ms'], 2)} ms (×{_x(cpu['failover_ratio'])})**; consensus of 3 "
        f"**{fmt(cpu['consensus_quorum_ms'], 2)} vs {fmt(cpu['consensus_litellm_ms'], 2)} ms "
        f"(×{_x(cpu['consensus_ratio'])})** against LiteLLM's three requests at the same load, "
        f"×{_x(cpu['consensus_vs_3_requests'])} against 3 × LiteLLM's CPU per failover request.\n\n"
        f"**3. SIGKILL mid-flight.** {kq['sent']} requests at once, providers at {KILL_MS:.0f} ms "
        f"(sigma {KILL_SIGMA}), the process SIGKILLed {kill['kill_after_s']:g} s after sending. "
        "LiteLLM: the Router runs in a child process; its in-flight requests die with it (nothing "
        "persists them; a caller would have to resend). Quorum: the worker's process group is killed "
        "(the LiteLLM side runs while Quorum has no worker); "
        f"a new worker starts {kq['new_worker_after_s']:.1f} s later, with the shipped defaults "
        f"(liveness window {kill['liveness_window_s']:g} s, visibility timeout "
        f"{kill['visibility_timeout_s']} s), and hands back the dead worker's un-acked tasks once its "
        f"liveness has lapsed (all done {kq['all_done_after_kill_s']:.1f} s after the kill).\n\n"
        f"{kill_md}\n\n"
        "Emulator compatibility: LiteLLM sends Claude models that its model map marks "
        "`supports_native_structured_output` Anthropic's native `output_format`, which the emulator "
        "does not implement (it answered free text), so the bench registers claude-sonnet-4-6 without "
        "that flag and LiteLLM sends a forced tool call (`json_tool_call`), as Quorum does. LiteLLM "
        "writes Gemini's `generationConfig` members in snake_case (`response_json_schema`, "
        "`max_output_tokens`), which the emulator reads like the real API (both spellings), and "
        "builds `{api_base}/models/...` without an API version, so its Gemini `api_base` ends in "
        "`/v1beta` (Google's SDK, used by Quorum, adds it itself; same emulator route)."
    )
    data = {"litellm_version": version, "failover": failover, "throughput": load, "consensus": consensus,
            "cpu_per_job": cpu, "kill": kill, "full": full}  # fmt: skip
    return Section("peer", "Peer: Quorum vs LiteLLM Router", md, data)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    cli(run, argv)


if __name__ == "__main__":
    main()
