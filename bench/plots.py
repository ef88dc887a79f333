"""``python -m bench.plots [--json bench/out/report.json] [--out bench/out]``: PNG figures of a
benchmark report (matplotlib, Agg backend, no screen needed).

* ``latency.png``: latency distributions (ECDF, log axis, p50 and p95 marked): single provider vs
  consensus of 3 vs consensus + early quorum; failover with 1 and 2 providers down (breaker closed
  and open) vs the answering provider called directly.
* ``throughput.png``: jobs/s against the worker count per pool (``scaling``), or failing that
  against one worker's concurrency (``pools``).
* ``accuracy.png``: extraction accuracy per field and answer (``accuracy``), and how often each
  generation selector picks a defect-free answer vs a random pick (``selection``).
* ``peer.png``: failover latency, Quorum vs LiteLLM (``peer``).

A figure whose data is missing from the report is skipped with a one-line message. Needs the
``bench`` extra: ``pip install 'quorum[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import OUT_DIR
from bench.stats import quantile

INSTALL_HINT = (
    "matplotlib is not installed, so no plots: pip install 'quorum[bench]' "
    "(or pip install matplotlib), then python -m bench.plots"
)
#: Colours by role, the same in every figure.
COLOURS = {
    "single": "#4c72b0", "consensus": "#dd8452", "consensus_early": "#55a868",
    "direct": "#333333", "k1": "#8172b3", "k2": "#c44e52",
    "quorum": "#4c72b0", "litellm": "#dd8452",
    "threads": "#4c72b0", "prefork": "#dd8452", "solo": "#55a868", "gevent": "#8172b3",
}  # fmt: skip
CYCLE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]

Report = dict[str, Any]
Say = Callable[[str], None]


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported (it is in the optional ``bench`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bench_data(report: Report, name: str) -> dict[str, Any] | None:
    """The figures of benchmark ``name``, or None when it is absent or failed. The JSON report
    flattens each section's data into its entry; a nested ``data`` dict is read too."""
    entry = (report.get("benchmarks") or {}).get(name)
    if not isinstance(entry, dict) or entry.get("error"):
        return None
    nested = entry.get("data")
    return {**entry, **nested} if isinstance(nested, dict) else entry


def _numbers(values: Any) -> list[float]:
    """The finite numbers of a list (JSON nulls and NaNs dropped)."""
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def caption(report: Report) -> str:
    """The machine line: cores, CPU, memory, Python, OS, run size and date."""
    m = report.get("machine") or {}
    parts = [
        f"{m.get('cores', '?')} cores, {m.get('cpu', 'unknown CPU')}",
        f"{m.get('memory_gb', '?')} GB RAM",
        f"{m.get('implementation', 'Python')} {m.get('python', '')}".strip(),
        str(m.get("os", "")),
    ]
    when = str(report.get("generated_at") or "")[:16].replace("T", " ")
    size = report.get("size")
    extra = [f"{size} run" if size else "", f"{when} UTC" if when else "", "providers emulated on loopback"]
    return " · ".join(["Machine: " + ", ".join(p for p in parts if p), *(e for e in extra if e)])


def _finish(plt: Any, fig: Any, report: Report, path: Path) -> Path:
    """Caption (wrapped to the figure's width), layout, save, close."""
    width, height = fig.get_size_inches()
    lines = textwrap.wrap(caption(report), width=int(width * 19))
    fig.text(0.005, 0.005, "\n".join(lines), fontsize=7, color="#555555", ha="left", va="bottom")
    fig.tight_layout(rect=(0, (0.06 + 0.12 * len(lines)) / height, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _log_ms_axis(ax: Any, span: float) -> None:
    """A log x axis in ms with plain tick labels (1, 2, 5, 10, 20, 50, ...; denser when the data
    spans less than ``20×``)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if span >= 20 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("job latency (ms, log scale)")


def _ecdf(ax: Any, title: str, curves: list[tuple[str, list[float], str, str]]) -> None:
    """One ECDF per ``(label, samples_ms, colour, linestyle)``; p50 (circle) and p95 (triangle)
    marked on each curve and quoted in the legend."""
    for label, xs, colour, style in curves:
        xs = sorted(xs)
        n = len(xs)
        ys = [(i + 1) / n for i in range(n)]
        p50, p95 = quantile(xs, 0.5), quantile(xs, 0.95)
        ax.step(xs, ys, where="post", color=colour, linestyle=style, linewidth=1.6,
                label=f"{label}: p50 {p50:.0f} · p95 {p95:.0f} ms (n={n})")  # fmt: skip
        ax.plot([p50], [0.5], "o", color=colour, markersize=6, markeredgecolor="white", zorder=3)
        ax.plot([p95], [0.95], "^", color=colour, markersize=7, markeredgecolor="white", zorder=3)
    for q in (0.5, 0.95):
        ax.axhline(q, color="#999999", linewidth=0.7, linestyle=":", zorder=0)
    ax.text(1.0, 0.5, " p50", transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="#666")
    ax.text(1.0, 0.95, " p95", transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="#666")
    lows = [min(xs) for _, xs, _, _ in curves if xs]
    highs = [max(xs) for _, xs, _, _ in curves if xs]
    _log_ms_axis(ax, max(highs) / max(min(lows), 1e-3) if lows else 100.0)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("share of jobs at or below (ECDF)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)


def _latency_panels(report: Report) -> list[tuple[str, list[tuple[str, list[float], str, str]]]]:
    panels = []
    lat = bench_data(report, "latency")
    samples = (lat or {}).get("samples_ms") or {}
    names = {"single": "single provider", "consensus": "consensus of 3",
             "consensus_early": "consensus of 3 + early quorum"}  # fmt: skip
    curves = [(label, _numbers(samples.get(k)), COLOURS[k], "-") for k, label in names.items()]
    curves = [c for c in curves if c[1]]
    if curves:
        prof = (lat or {}).get("profile") or {}
        how = (
            f"providers log-normal, median {prof['median_ms']:g} ms, σ {prof['sigma']:g}"
            if "median_ms" in prof and "sigma" in prof
            else "log-normal provider latency"
        )
        panels.append((f"Consensus vs a single provider\n({how})", curves))
    fail = bench_data(report, "failover")
    samples = (fail or {}).get("samples_ms") or {}
    wanted = [
        ("direct", "answering provider alone", "direct", "-"),
        ("k1_closed", "1 down, breaker closed", "k1", "-"),
        ("k2_closed", "2 down, breaker closed", "k2", "-"),
        ("k1_open", "1 down, breaker open", "k1", "--"),
        ("k2_open", "2 down, breaker open", "k2", "--"),
    ]
    curves = [(label, _numbers(samples.get(k)), COLOURS[c], s) for k, label, c, s in wanted]
    curves = [c for c in curves if c[1]]
    if curves:
        ms = _finite((fail or {}).get("provider_latency_ms"))
        at = f"answering provider at a fixed {ms:g} ms" if ms is not None else "fixed provider latency"
        panels.append((f"Failover with providers down\n({at}; down ones fail with 503 at once)", curves))
    return panels


def plot_latency(report: Report, out: Path, say: Say = print) -> Path | None:
    """``latency.png``: ECDFs of the latency and failover benchmarks' raw per-job samples."""
    panels = _latency_panels(report)
    if not panels:
        say("latency.png: skipped (no samples_ms in the latency or failover benchmark data)")
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.8 * len(panels), 5.0), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels, strict=True):
        _ecdf(ax, title, curves)
    fig.suptitle("Job latency distributions (producer wall clock, send → result)", fontsize=12)
    return _finish(plt, fig, report, out / "latency.png")


def _by_pool(
    rows: list[dict[str, Any]], x_key: str, y_key: str, with_concurrency: bool = False
) -> dict[str, list[tuple[float, float]]]:
    """``(x, y)`` points per pool (per pool and concurrency with ``with_concurrency``), sorted."""
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if not isinstance(r, dict):
            continue
        x, y = _finite(r.get(x_key)), _finite(r.get(y_key))
        name = str(r.get("pool", "?"))
        if with_concurrency and r.get("concurrency") is not None:
            name += f", c={r['concurrency']}"
        if x is not None and y is not None:
            series.setdefault(name, []).append((x, y))
    return {p: sorted(pts) for p, pts in series.items()}


def _colour(name: str, i: int) -> str:
    return COLOURS.get(name.split(",")[0], CYCLE[i % len(CYCLE)])


def _lines(ax: Any, series: dict[str, list[tuple[float, float]]], fmt: str, ideal: bool = False) -> None:
    """One line per pool, each point labelled; ``ideal`` adds dotted linear scaling from the first."""
    for i, (pool, pts) in enumerate(series.items()):
        colour = _colour(pool, i)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colour, linewidth=1.8, label=pool)
        for x, y in pts:
            ax.annotate(fmt.format(y), (x, y), textcoords="offset points", xytext=(0, 7), ha="center",
                        fontsize=8, color=colour)  # fmt: skip
    top = max(p[1] for pts in series.values() for p in pts)
    for i, (pool, pts) in enumerate(series.items()):
        if ideal and len(pts) > 1:  # dotted: linear scaling from the smallest count
            (x0, y0), xs = pts[0], [p[0] for p in pts]
            top = max(top, y0 * xs[-1] / x0)
            ax.plot(xs, [y0 * x / x0 for x in xs], ":", color=_colour(pool, i), linewidth=1.2,
                    label="linear scaling (dotted)" if i == 0 else None)  # fmt: skip
    xs = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlim(xs[0] / 1.25, xs[-1] * 1.25)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def plot_throughput(report: Report, out: Path, say: Say = print) -> Path | None:
    """``throughput.png``: jobs/s (and memory per worker) against the worker count per pool, from
    ``scaling``; failing that, one worker's jobs/s against its concurrency, from ``pools``."""
    rows = (bench_data(report, "scaling") or {}).get("series")
    jobs = _by_pool(rows, "workers", "jobs_s", with_concurrency=True) if isinstance(rows, list) else {}
    from_scaling = bool(jobs)
    if from_scaling:
        rss = _by_pool(rows, "workers", "peak_rss_mb_per_worker", with_concurrency=True)
        x_label, title = "workers", "Throughput against the number of workers"
        mem_label, mem_title = "peak RSS per worker (MB)", "Memory per worker"
    else:
        rows = (bench_data(report, "pools") or {}).get("configs")
        jobs = _by_pool(rows, "concurrency", "jobs_s") if isinstance(rows, list) else {}
        if not jobs:
            say("throughput.png: skipped (no scaling series nor pools configs in the report)")
            return None
        say("throughput.png: no scaling benchmark in the report, plotting pools (one worker) instead")
        rss = _by_pool(rows, "concurrency", "peak_pss_mb")
        x_label = "concurrency of the one worker (threads or processes, log scale)"
        title = "One worker: throughput against its concurrency (pools; no scaling data)"
        mem_label, mem_title = "peak PSS of the worker (MB)", "Memory of the worker"
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if rss else 1, figsize=(12.5 if rss else 7.0, 4.8), squeeze=False)
    ax = axes[0][0]
    _lines(ax, jobs, "{:.1f}", ideal=from_scaling)
    ax.set_xlabel(x_label)
    ax.set_ylabel("completed jobs/s")
    ax.set_title(title, fontsize=10)
    if rss:
        ax = axes[0][1]
        _lines(ax, rss, "{:.0f}")
        ax.set_xlabel(x_label)
        ax.set_ylabel(mem_label)
        ax.set_title(mem_title, fontsize=10)
    fig.suptitle("Worker throughput (emulated providers)", fontsize=12)
    return _finish(plt, fig, report, out / "throughput.png")


def _heatmap(ax: Any, fig: Any, scenario: str, fig_data: dict[str, Any], note: str) -> bool:
    """Accuracy (0..1) per answer (rows) and field (columns), the values printed in the cells."""
    cold, warm = fig_data.get("cold") or {}, fig_data.get("warm") or {}
    singles = [k for k in ("claude", "openai", "gemini") if isinstance(cold.get(k), dict)]
    rows: list[tuple[str, dict[str, Any]]] = [(k, cold[k]) for k in singles]
    rows += [("best_match", cold["best_match"])] if "best_match" in cold else []
    rows += [("consensus (cold counts)", cold["consensus"])] if "consensus" in cold else []
    rows += [("consensus (warm counts)", warm["consensus"])] if "consensus" in warm else []
    rows = [(k, v) for k, v in rows if isinstance(v, dict)]
    if not rows:
        return False
    skip = {"n", "field_mean", "record"}
    fields = [f for f in rows[0][1] if f not in skip] + ["field_mean", "record"]
    heads = [f.replace("_", " ") for f in fields[:-2]] + ["FIELD MEAN", "WHOLE RECORD"]
    grid = [[_finite(v.get(f)) for f in fields] for _, v in rows]
    values = [[math.nan if x is None else x for x in row] for row in grid]
    image = ax.imshow(values, cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
    for i, row in enumerate(grid):
        for j, x in enumerate(row):
            text = "n/a" if x is None else f"{100 * x:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    fontweight="bold" if rows[i][0].startswith("consensus") else "normal")  # fmt: skip
    ax.set_xticks(range(len(heads)), heads, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [k for k, _ in rows], fontsize=8)
    ax.axvline(len(fields) - 2.5, color="white", linewidth=3)
    if 0 < len(singles) < len(rows):  # single providers above, merged answers below
        ax.axhline(len(singles) - 0.5, color="white", linewidth=3)
    ax.set_title(f"Extraction, scenario {scenario}: {note}\naccuracy per field (%)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share right (colours clip below 50 %)")
    return True


def _selection(ax: Any, figures: dict[str, Any]) -> bool:
    rows = [
        (k, v) for k, v in figures.items() if isinstance(v, dict) and _finite(v.get("chosen_ok")) is not None
    ]
    if not rows:
        return False
    ys = list(range(len(rows)))[::-1]
    chosen = [float(v["chosen_ok"]) * 100 for _, v in rows]
    ax.barh(ys, chosen, color="#4c72b0", height=0.6, label="chosen answer defect-free")
    for y, c in zip(ys, chosen, strict=True):
        ax.text(c - 1, y, f"{c:.0f} %", va="center", ha="right", color="white", fontsize=8, fontweight="bold")
    marks = (("random_ok", "x", "#c44e52", "random pick (expected)"),
             ("any_ok", "|", "#222222", "best possible (any candidate)"))  # fmt: skip
    for key, marker, colour, label in marks:
        pts = [(y, _finite(v.get(key))) for y, (_, v) in zip(ys, rows, strict=True)]
        pts = [(y, 100 * x) for y, x in pts if x is not None]
        if pts:
            ax.plot([p[1] for p in pts], [p[0] for p in pts], marker, color=colour, markersize=10,
                    markeredgewidth=2, linestyle="none", label=label)  # fmt: skip
    ax.set_yticks(ys, [k for k, _ in rows], fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("share of generation jobs (%)")
    ax.set_title("Generation: selectors vs a random pick (simulated defects)", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    ax.grid(True, axis="x", alpha=0.3)
    return True


def plot_accuracy(report: Report, out: Path, say: Say = print) -> Path | None:
    """``accuracy.png``: per-field accuracy of each answer in the two noise scenarios, and the
    share of defect-free answers each generation selector picks."""
    acc = bench_data(report, "accuracy")
    figs = (acc or {}).get("figures")
    scenarios = {k: v for k, v in figs.items() if isinstance(v, dict)} if isinstance(figs, dict) else {}
    sel = bench_data(report, "selection")
    sel_figs = (sel or {}).get("figures")
    has_sel = isinstance(sel_figs, dict) and any(
        isinstance(v, dict) and _finite(v.get("chosen_ok")) is not None for v in sel_figs.values()
    )
    if not scenarios and not has_sel:
        say("accuracy.png: skipped (no accuracy or selection figures in the report)")
        return None
    notes = {"a": "three equally noisy providers", "b": "gemini far noisier than the other two"}
    plt = _pyplot()
    cols = max(len(scenarios), 1)
    rows = (1 if scenarios else 0) + (1 if has_sel else 0)
    heights = ([1.0] if scenarios else []) + ([0.8] if has_sel else [])
    fig = plt.figure(figsize=(6.8 * cols if scenarios else 8.0, 4.3 * sum(heights) + 0.4))
    grid = fig.add_gridspec(rows, cols, height_ratios=heights)
    for i, (name, data) in enumerate(scenarios.items()):
        if not _heatmap(fig.add_subplot(grid[0, i]), fig, name, data, notes.get(name, "")):
            say(f"accuracy.png: scenario {name} has no rows, left empty")
    if has_sel:
        _selection(fig.add_subplot(grid[rows - 1, :]), sel_figs)
    else:
        say("accuracy.png: no selection figures, extraction only")
    if not scenarios:
        say("accuracy.png: no accuracy figures, selection only")
    fig.suptitle("Accuracy (emulated noise and defects: measures the merge and selection, not models)",
                 fontsize=12)  # fmt: skip
    return _finish(plt, fig, report, out / "accuracy.png")


def plot_peer(report: Report, out: Path, say: Say = print) -> Path | None:
    """``peer.png``: failover latency, Quorum vs LiteLLM, from ``peer``'s raw samples."""
    peer = bench_data(report, "peer")
    failover = (peer or {}).get("failover")
    samples = (failover or {}).get("samples_ms") if isinstance(failover, dict) else None
    if not isinstance(samples, dict):
        say("peer.png: skipped (no peer failover samples_ms in the report)")
        return None
    names = {"quorum": "Quorum", "litellm": "LiteLLM"}
    direct = failover.get("direct_samples_ms")  # failover is a dict: it holds samples
    direct = direct if isinstance(direct, dict) else {}
    curves = []
    for i, (k, v) in enumerate(samples.items()):
        curves.append((f"{names.get(k, k)}, failover (primary down)", _numbers(v), _colour(k, i), "-"))
        curves.append(
            (f"{names.get(k, k)}, direct (primary up)", _numbers(direct.get(k)), _colour(k, i), "--")
        )
    curves = [c for c in curves if c[1]]
    if not curves:
        say("peer.png: skipped (peer failover samples are empty)")
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    ms = _finite(failover.get("latency_ms"))
    at = f"providers at a fixed {ms:g} ms" if ms is not None else "same providers for both"
    title = (
        f"Failover: a down primary (503) then the fallback\n({at}; Quorum: whole job; LiteLLM: in-process)"
    )
    _ecdf(ax, title, curves)
    fig.suptitle("Quorum vs LiteLLM (same emulated providers)", fontsize=12)
    return _finish(plt, fig, report, out / "peer.png")


PLOTS: tuple[Callable[[Report, Path, Say], Path | None], ...] = (
    plot_latency,
    plot_throughput,
    plot_accuracy,
    plot_peer,
)


def write_all(report: Report, out: Path, say: Say = print) -> list[Path]:
    """Every plot the report has data for; a plot that fails is reported and skipped."""
    written = []
    for plot in PLOTS:
        name = plot.__name__.removeprefix("plot_") + ".png"
        try:
            path = plot(report, out, say)
        except Exception as e:  # partial or odd data must not stop the other plots
            say(f"{name}: skipped ({type(e).__name__}: {e})")
            continue
        if path is not None:
            written.append(path)
            say(f"wrote {path}")
    return written


def main(argv: list[str] | None = None) -> int:
    """Read the report JSON and write the PNGs; 0 unless the report cannot be read."""
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--json", type=Path, default=OUT_DIR / "report.json", help="the report to plot")
    parser.add_argument("--out", type=Path, default=None, help="where the PNGs go (default: beside --json)")
    args = parser.parse_args(argv)
    if not matplotlib_available():
        print(INSTALL_HINT)
        return 0
    try:
        report = json.loads(args.json.read_text())
    except (OSError, ValueError) as e:
        print(f"cannot read {args.json}: {e} (run python -m bench first)", file=sys.stderr)
        return 1
    if not isinstance(report, dict):
        print(f"{args.json} is not a benchmark report", file=sys.stderr)
        return 1
    write_all(report, args.out or args.json.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
