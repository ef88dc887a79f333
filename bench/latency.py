"""Consensus latency: consensus-of-3 p50/p95 over single-provider p50/p95 under a heavy-tailed
provider latency (log-normal), with and without early quorum, measured in one interleaved run.
"""

from __future__ import annotations

import math
import threading
import time
from statistics import NormalDist
from typing import Any

from bench.harness import THREE, Bench, quiet_profile
from bench.report import Section, cli
from bench.stats import median, p95, ratio, summary_ms, table, verdict
from orchestration.data import load_emails

MEDIAN_MS, SIGMA = 200.0, 0.8
CLIENTS = 4
VARIANTS = ("single", "consensus", "consensus_early")
NAMES = {"single": "single provider", "consensus": "consensus of 3",
         "consensus_early": "consensus of 3 + early quorum"}  # fmt: skip
HEADS = ["job", "n", "p50 ms", "p95 ms", "p50 ratio", "p95 ratio", "provider-only p50/p95 ratio",
         "target (both ratios)"]  # fmt: skip
TARGETS = {"consensus": 1.5, "consensus_early": 1.2}


def _kwargs(variant: str, i: int, text: str) -> dict[str, Any]:
    """Job kwargs of ``variant``; the single provider rotates over the three."""
    if variant == "single":
        return {"text": text, "strategy": "failover", "providers": [THREE[i % 3]], "use_cache": False}
    early = variant == "consensus_early"
    return {"text": text, "strategy": "consensus", "providers": THREE, "use_cache": False,
            "early_quorum": early}  # fmt: skip


def expected_ratio(variant: str, q: float) -> float:
    """The ratio provider latency alone gives: order statistic of 3 log-normals vs one."""
    if variant == "single":
        return 1.0
    if variant == "consensus":  # the slowest of three
        f = q ** (1 / 3)
    else:  # the second of three: P(X(2) <= x) = 3F^2 - 2F^3 = q, solved by bisection
        lo, hi = 0.0, 1.0
        for _ in range(60):
            f = (lo + hi) / 2
            lo, hi = (f, hi) if 3 * f * f - 2 * f**3 < q else (lo, f)
    z = NormalDist()
    return math.exp(SIGMA * (z.inv_cdf(f) - z.inv_cdf(q)))


def _client(b: Bench, jobs: list[tuple[str, int]], emails: list[str], out: dict[str, list[Any]]) -> None:
    """Run ``jobs`` one after another, recording ``(seconds, result)`` per variant."""
    for variant, i in jobs:
        seconds, result = b.timed(**_kwargs(variant, i, emails[i % len(emails)]))
        out[variant].append((seconds, result))


def run(full: bool = False) -> Section:
    """Interleave single, consensus and early-quorum consensus jobs from a few clients."""
    per_variant = 400 if full else 100
    emails = [e.text for e in load_emails()]
    profile = quiet_profile(MEDIAN_MS, SIGMA, seed=11)
    schedule = [(v, i) for i in range(per_variant) for v in VARIANTS]
    out: dict[str, list[Any]] = {v: [] for v in VARIANTS}
    with Bench(workers=2, pool="threads", concurrency=16, profile=profile) as b:
        for i in range(3):  # warm-up
            for v in VARIANTS:
                b.timed(**_kwargs(v, i, emails[0]))
        start = time.monotonic()
        threads = [
            threading.Thread(target=_client, args=(b, schedule[c::CLIENTS], emails, out), daemon=True)
            for c in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        elapsed = time.monotonic() - start
    return _section(out, elapsed, full)


def _section(out: dict[str, list[Any]], elapsed: float, full: bool) -> Section:
    lat = {v: [s for s, r in out[v] if isinstance(r, dict)] for v in VARIANTS}
    failed = {v: sum(1 for _, r in out[v] if not isinstance(r, dict)) for v in VARIANTS}
    early = sum(1 for _, r in out["consensus_early"] if isinstance(r, dict) and r.get("early"))
    base50, base95 = median(lat["single"]), p95(lat["single"])
    rows, figures = [], {}
    for v in VARIANTS:
        s = summary_ms(lat[v])
        r50, r95 = ratio(median(lat[v]), base50), ratio(p95(lat[v]), base95)
        target = TARGETS.get(v)
        met = None if target is None else (r50 <= target and r95 <= target)
        exp50, exp95 = expected_ratio(v, 0.5), expected_ratio(v, 0.95)
        figures[v] = {**s, "ratio_p50": r50, "ratio_p95": r95, "expected_p50": exp50,
                      "expected_p95": exp95, "target": target, "met": met, "failed": failed[v]}  # fmt: skip
        rows.append([
            NAMES[v], s["n"], s["median_ms"],
            s["p95_ms"], f"{r50:.2f}", f"{r95:.2f}", f"{exp50:.2f} / {exp95:.2f}",
            "baseline" if target is None else f"≤ {target} {'met' if met else 'NOT met'}",
        ])  # fmt: skip
    md = (
        f"Every provider log-normal, median {MEDIAN_MS:.0f} ms, sigma {SIGMA}; no faults, no answer noise "
        f"(so the three answers agree). {CLIENTS} producer threads, jobs of the three kinds interleaved "
        "(single rotates over claude/openai/gemini), 2 workers (threads, concurrency 16), producer wall "
        f"clock. {sum(len(v) for v in out.values())} jobs in {elapsed:.1f} s.\n\n"
        + table(HEADS, rows)
        + "\n\nRatios are against the single-provider job of the same run. *Provider-only ratio* is what "
        "the latency distribution alone gives (slowest of 3 without early quorum, second of 3 with it), "
        "i.e. the floor for any implementation that waits for those answers.\n\n"
        f"Early-quorum jobs published early: {early}/{len(lat['consensus_early'])}. "
        f"Failed jobs: {failed}.\n\n"
        f"Consensus without early quorum ≤ 1.5: {verdict(bool(figures['consensus']['met']))}; "
        f"with early quorum ≤ 1.2: {verdict(bool(figures['consensus_early']['met']))}."
    )
    data = {"profile": {"median_ms": MEDIAN_MS, "sigma": SIGMA}, "variants": figures,
            "early_published": early, "elapsed_s": elapsed, "full": full,
            "samples_ms": {v: [round(x * 1000, 2) for x in lat[v]] for v in VARIANTS}}  # fmt: skip
    return Section("latency", "Consensus latency vs a single provider", md, data)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    cli(run, argv)


if __name__ == "__main__":
    main()
