"""Small statistics and formatting helpers: median, p95, ratios, Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1), linear interpolation between order statistics; NaN if empty."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    """The median; NaN if empty."""
    return quantile(values, 0.5)


def p95(values: Sequence[float]) -> float:
    """The 95th percentile; NaN if empty."""
    return quantile(values, 0.95)


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is zero or either is NaN."""
    if b == 0 or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """``{n, median_ms, p95_ms, mean_ms}`` of latencies given in seconds."""
    ms = [s * 1000 for s in seconds]
    mean = sum(ms) / len(ms) if ms else math.nan
    return {"n": len(ms), "median_ms": median(ms), "p95_ms": p95(ms), "mean_ms": mean}


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: floats rounded (NaN as ``n/a``), booleans as met/NOT met, the rest as str."""
    if isinstance(value, bool):
        return "met" if value else "NOT met"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def pct(value: float, digits: int = 1) -> str:
    """A share as a percentage cell."""
    return "n/a" if math.isnan(value) else f"{100 * value:.{digits}f} %"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 1) -> str:
    """A Markdown table; cells go through :func:`fmt` unless they are already strings."""
    cells = [[c if isinstance(c, str) else fmt(c, digits) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def verdict(met: bool) -> str:
    """``met`` / ``NOT met`` in bold for a target line."""
    return "**met**" if met else "**NOT met**"
