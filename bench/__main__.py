"""``python -m bench [--full] [--only failover,latency,...]``: every benchmark in sequence, one
Markdown report on stdout (also ``bench/out/report.md``) and the figures in ``bench/out/report.json``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

from bench.report import OUT_DIR, Section, header, timed_run, write_json

BENCHMARKS = ("failover", "latency", "accuracy", "pools", "status")


def run_one(name: str, full: bool) -> Section:
    """Run ``bench.<name>``; a benchmark that crashes becomes a section saying so."""
    module = importlib.import_module(f"bench.{name}")
    try:
        return timed_run(module.run, full)
    except Exception:  # report it and go on with the others
        return Section(name, f"{name}: FAILED", f"```\n{traceback.format_exc()}\n```", {"error": True})


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run the benchmarks, print and write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="larger runs (default: small, quick ones)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where report.json/.md go")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    sections = []
    for name in names:
        print(f"running bench.{name} ...", file=sys.stderr, flush=True)
        sections.append(run_one(name, args.full))
    text = header(args.full) + "\n" + "\n".join(s.render() for s in sections)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(text)
    write_json(sections, args.full, args.out / "report.json")
    print(f"(written to {args.out / 'report.md'} and {args.out / 'report.json'})", file=sys.stderr)


if __name__ == "__main__":
    main()
