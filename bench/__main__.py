"""``python -m bench [--full] [--only failover,latency,...] [--out DIR]``: every benchmark in
sequence, one Markdown report on stdout (also ``bench/out/report.md``), the figures in
``bench/out/report.json`` and, when matplotlib is installed (``pip install 'quorum[bench]'``), the
plots of :mod:`bench.plots` next to them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path

from bench.report import OUT_DIR, Section, header, notices, timed_run, write_json

BENCHMARKS = (
    "failover", "latency", "accuracy", "selection", "pools", "scaling", "cpu", "profile", "recovery", "peer",
    "status", "bytes", "tracing", "receive",
)  # fmt: skip


def run_one(name: str, full: bool) -> Section:
    """Run ``bench.<name>``; a benchmark that is missing or crashes becomes a section saying so."""
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"bench.{name}":  # the module exists but something it imports does not
            return _failed(name)
        note = f"`bench/{name}.py` is not in this checkout: skipped."
        return Section(name, f"{name}: skipped (no module)", note, {"error": True, "skipped": True})
    except Exception:
        return _failed(name)
    try:
        return timed_run(module.run, full)
    except (Exception, SystemExit):  # report it and go on with the others
        return _failed(name)


def _failed(name: str) -> Section:
    return Section(name, f"{name}: FAILED", f"```\n{traceback.format_exc()}\n```", {"error": True})


def write_plots(report: Path, out_dir: Path) -> None:
    """The PNGs of :mod:`bench.plots`, if matplotlib is installed; never fails the run."""
    try:
        from bench import plots

        if not plots.matplotlib_available():
            print(plots.INSTALL_HINT, file=sys.stderr)
            return
        plots.write_all(json.loads(report.read_text()), out_dir, say=lambda m: print(m, file=sys.stderr))
    except Exception:  # the report is written already: say so and keep it
        print(f"plots failed:\n{traceback.format_exc()}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run the benchmarks, print and write the report and the plots."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="larger runs (default: small, quick ones)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where report.json/.md and the PNGs go")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    sections = []
    for name in names:
        print(f"running bench.{name} ...", file=sys.stderr, flush=True)
        sections.append(run_one(name, args.full))
    text = header(args.full) + "\n" + notices(sections) + "\n" + "\n".join(s.render() for s in sections)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(text)
    write_json(sections, args.full, args.out / "report.json")
    print(f"(written to {args.out / 'report.md'} and {args.out / 'report.json'})", file=sys.stderr)
    write_plots(args.out / "report.json", args.out)


if __name__ == "__main__":
    main()
