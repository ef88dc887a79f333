"""Traces' cost: job latency with OpenTelemetry on (the OTLP/HTTP exporter of the ``[otel]`` extra
behind the SDK's batch processor, posting to a local sink that answers 200) against off, on the
same worker and emulator, in alternating phases (off, on, off, on) so that drift hits both alike.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.harness import Bench, quiet_profile
from bench.report import Section, cli
from bench.stats import median, p95, ratio, summary_ms, table
from orchestration.data import load_emails
from workers import tracing

SHAPES: dict[str, dict[str, Any]] = {
    "failover, 1 hop down": {"strategy": "failover", "providers": ["claude", "openai"]},
    "consensus of 3": {"strategy": "consensus", "providers": ["claude", "openai", "gemini"]},
}


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that reads each batch and keeps nothing."""

    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def otlp_sink() -> Iterator[str]:
    """A loopback OTLP/HTTP endpoint for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class _Request:
    id = ""
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _Task:
    """What the signal handlers read of a running task (a provider call)."""

    name = "quorum.call"
    request = _Request()


def handler_cost_us(endpoint: str | None, n: int) -> float:
    """Microseconds per task of :mod:`workers.spans`' handlers (prerun, one publish, success,
    postrun), in this process; with ``endpoint``, spans are also exported there (OTLP/HTTP)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from workers import spans

    provider = TracerProvider()
    if endpoint:
        exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=n))
    spans._tracer = provider.get_tracer("bench")
    attempt = {"provider": "openai", "model": "m", "ok": True, "params": {"temperature": 0.7}, "tokens_in": 9}
    start = time.perf_counter()
    for i in range(n):
        _Task.request.id = task_id = f"job-{i}.c0"
        spans._prerun(task_id=task_id, task=_Task)
        spans._inject(headers={})
        spans._success(sender=_Task, result=attempt)
        spans._postrun(task_id=task_id, state="SUCCESS")
    provider.force_flush()  # the export's CPU counts too
    elapsed = time.perf_counter() - start
    provider.shutdown()
    spans._tracer = None
    return elapsed / n * 1e6


def _phase(
    b: Bench, text: str, rounds: int, traced: dict[str, str], lat: dict[str, dict[str, list[float]]]
) -> None:
    """Restart the worker with traces on or off, warm it up, then time ``rounds`` jobs per shape."""
    b.stop_workers()
    untraced = {k: v for k, v in b.env.items() if not k.startswith("OTEL_")}
    b.env = {**untraced, **traced}
    b.start_workers(1, "threads", 8)
    key = "on" if traced else "off"
    for _ in range(5):  # SDK clients, connections, imports
        for shape in SHAPES.values():
            b.timed(text=text, use_cache=False, **shape)
    for _ in range(rounds):
        for name, shape in SHAPES.items():
            seconds, result = b.timed(text=text, use_cache=False, **shape)
            if isinstance(result, dict):
                lat[name][key].append(seconds)


def otlp_available() -> bool:
    """Whether the OTLP/HTTP exporter of the ``[otel]`` extra is installed (the SDK alone, which
    the ``[test]`` extra brings, has none: the traced phases would export nothing)."""
    try:
        return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def run(full: bool = False) -> Section:
    """Median and p95 job latency by shape, traces off and on, and their ratios."""
    if not (tracing.available() and otlp_available()):
        note = "The `[otel]` extra is not installed (`pip install -e '.[otel]'`): skipped."
        title = "tracing: skipped (the [otel] extra is not installed)"
        return Section("tracing", title, note, {"skipped": True})
    rounds = 100 if full else 20
    text = load_emails()[0].text
    lat: dict[str, dict[str, list[float]]] = {name: {"off": [], "on": []} for name in SHAPES}
    with Bench(
        workers=1, pool="threads", concurrency=8, profile=quiet_profile(0.0),
        consecutive_failures=1_000_000, min_calls=1_000_000,
    ) as b:  # fmt: skip
        b.emulator.set_down("claude")  # its breaker never opens: every failover job calls it
        with otlp_sink() as endpoint:
            on = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "quorum-bench"}
            for traced in ({}, on, {}, on):
                _phase(b, text, rounds // 2, traced, lat)
            b.stop_workers()  # the last batch is posted at shutdown
            n = 20_000 if full else 5_000
            cost = {"no export": handler_cost_us(None, n), "OTLP/HTTP export": handler_cost_us(endpoint, n)}
    return _section(lat, full, _Sink.received, cost)


def _section(
    lat: dict[str, dict[str, list[float]]], full: bool, batches: int, cost: dict[str, float]
) -> Section:
    rows = []
    for name, by in lat.items():
        off, on = by["off"], by["on"]
        rows.append(
            [
                name, len(off), median(off) * 1000, median(on) * 1000, ratio(median(on), median(off)),
                p95(off) * 1000, p95(on) * 1000, ratio(p95(on), p95(off)),
            ]
        )  # fmt: skip
    headers = ["job", "jobs per arm", "median off ms", "median on ms", "ratio", "p95 off", "p95 on", "ratio"]
    md = (
        "One threads worker (concurrency 8), emulator with no added latency, `claude` down (its "
        "breaker kept closed, so every failover job really calls it and fails over). "
        "Phases alternate off/on/off/on, each after a worker restart and a warm-up; numbers are "
        "from the emulator (a simulation). Traces on: OTLP/HTTP to a loopback sink, which received "
        f"{batches} batches.\n\n"
        f"{table(headers, rows, 2)}\n\n"
        "The handlers' own cost per task (span start, one publish's injection, the call's "
        "attributes, span end; in the benchmark's process, µs):\n\n"
        f"{table(['exporter', 'µs per task'], [[k, v] for k, v in cost.items()], 1)}\n"
    )
    data = {
        "full": full,
        "otlp_batches": batches,
        "handler_us_per_task": cost,
        "shapes": {name: {arm: summary_ms(xs) for arm, xs in by.items()} for name, by in lat.items()},
    }
    return Section("tracing", "Traces: job latency with OpenTelemetry on vs off", md, data)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    cli(run, argv)


if __name__ == "__main__":
    main()
