"""Traces' cost: job latency with OpenTelemetry on (the SDK's console exporter behind its batch
processor: spans serialised and written off the task's thread) against off, on the same worker
and emulator, in alternating phases (off, on, off, on) so that drift hits both alike.
"""

from __future__ import annotations

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
TRACED = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "quorum-bench"}


def _phase(b: Bench, text: str, rounds: int, traced: bool, lat: dict[str, dict[str, list[float]]]) -> None:
    """Restart the worker with traces on or off, warm it up, then time ``rounds`` jobs per shape."""
    b.stop_workers()
    untraced = {k: v for k, v in b.env.items() if not k.startswith("OTEL_")}
    b.env = {**untraced, **TRACED} if traced else untraced
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


def run(full: bool = False) -> Section:
    """Median and p95 job latency by shape, traces off and on, and their ratios."""
    if not tracing.available():
        note = "The `[otel]` extra is not installed (`pip install -e '.[otel]'`): skipped."
        return Section("tracing", "tracing: skipped (no OpenTelemetry SDK)", note, {"skipped": True})
    rounds = 100 if full else 20
    text = load_emails()[0].text
    lat: dict[str, dict[str, list[float]]] = {name: {"off": [], "on": []} for name in SHAPES}
    with Bench(
        workers=1, pool="threads", concurrency=8, profile=quiet_profile(0.0),
        consecutive_failures=1_000_000, min_calls=1_000_000,
    ) as b:  # fmt: skip
        b.emulator.set_down("claude")  # its breaker never opens: every failover job calls it
        for traced in (False, True, False, True):
            _phase(b, text, rounds // 2, traced, lat)
    return _section(lat, full)


def _section(lat: dict[str, dict[str, list[float]]], full: bool) -> Section:
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
        "from the emulator (a simulation).\n\n"
        f"{table(headers, rows, 2)}\n"
    )
    data = {
        "full": full,
        "shapes": {name: {arm: summary_ms(xs) for arm, xs in by.items()} for name, by in lat.items()},
    }
    return Section("tracing", "Traces: job latency with OpenTelemetry on vs off", md, data)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    cli(run, argv)


if __name__ == "__main__":
    main()
