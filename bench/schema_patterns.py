"""Hostile schema patterns: the cost of validating an answer against ``^(a+)+$`` when the model
answers n ``a``s and a ``!``, with jsonschema's stock validator (Python's backtracking ``re``: the
baseline, measured in the same run) and with Quorum's bounded validator (RE2), plus the bounded
validator on a recursive schema that fans out on a deeply nested answer (cut by the step budget).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator

from bench.report import Section, cli
from bench.stats import median, p95, ratio, table
from orchestration.errors import InvalidOutputError
from orchestration.schema_validator import MAX_VALIDATION_STEPS
from orchestration.schemas import output_schema, parse_output

PATTERN = "^(a+)+$"
SCHEMA = {"type": "object", "properties": {"code": {"type": "string", "pattern": PATTERN}}}


def _answer(n: int) -> dict[str, Any]:
    return {"code": {"value": "a" * n + "!", "confidence": 0.9}}


def _times(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _bounded(answer: dict[str, Any], schema: dict[str, Any] = SCHEMA) -> None:
    with contextlib.suppress(InvalidOutputError):
        parse_output(answer, schema, "bench")


def _fan_out() -> tuple[dict[str, Any], dict[str, Any]]:
    """A schema with two in-place branches per level of a nested array, and a value 40 deep:
    2^40 evaluations unbounded (a schema whose $defs double up per level is refused up front)."""
    fan = {"allOf": [{"type": "array", "items": {"$ref": "#/$defs/fan"}}, {"items": {"$ref": "#/$defs/fan"}}]}
    deep: Any = []
    for _ in range(40):
        deep = [deep]
    schema = {"type": "object", "properties": {"code": {"$ref": "#/$defs/fan"}}, "$defs": {"fan": fan}}
    return schema, {"code": {"value": deep, "confidence": 1}}


def run(full: bool) -> Section:
    """Median/p95 per answer length; the stock validator only up to lengths it finishes."""
    stock_ns = [16, 18, 20, 22] if full else [16, 18, 20]
    repeat = 5 if full else 3
    stock = Draft202012Validator(output_schema(SCHEMA))
    rows, data = [], {}
    for n in stock_ns:
        base = _times(lambda n=n: stock.is_valid(_answer(n)), repeat)
        ours = _times(lambda n=n: _bounded(_answer(n)), repeat * 10)
        data[n] = {"stock_ms": median(base) * 1000, "re2_ms": median(ours) * 1000}
        rows.append([n, median(base) * 1000, p95(base) * 1000, median(ours) * 1000, p95(ours) * 1000,
                     ratio(median(base), median(ours))])  # fmt: skip
    for n in (5000, 100_000):
        ours = _times(lambda n=n: _bounded(_answer(n)), repeat * 10)
        data[n] = {"stock_ms": None, "re2_ms": median(ours) * 1000}
        rows.append([n, "never ends", "", median(ours) * 1000, p95(ours) * 1000, ""])
    schema, answer = _fan_out()
    budget = _times(lambda: _bounded(answer, schema), repeat * 3)
    data["fan_out_ms"] = {"median": median(budget) * 1000, "p95": p95(budget) * 1000}
    markdown = "\n\n".join(
        [
            f"Answer `'a' * n + '!'` validated against `{PATTERN}` (ms per answer; ratio = stock / bounded).",
            table(["n", "stock median", "stock p95", "bounded median", "bounded p95", "ratio"], rows, 3),
            f"Fan-out schema on a value 40 arrays deep (2^40 evaluations unbounded), cut by the "
            f"step budget ({MAX_VALIDATION_STEPS} steps): median "
            f"{median(budget) * 1000:.1f} ms, p95 {p95(budget) * 1000:.1f} ms per answer.",
        ]
    )
    return Section("schema_patterns", "Hostile schema patterns", markdown, {"rows": data})


if __name__ == "__main__":
    cli(run)
