"""``quorum bench``: the benchmarks of a source checkout (``python -m bench``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from quorum_cli.exits import EXIT_USAGE
from quorum_cli.output import console

commands = typer.Typer()
#: Where ``quorum --help`` lists these commands.
PANEL = "Benchmarks"


@commands.command(rich_help_panel=PANEL)
def bench(
    full: Annotated[bool, typer.Option("--full", help="Larger runs (default: small, quick ones).")] = False,
    only: Annotated[
        str | None, typer.Option(help="Comma-separated subset, e.g. latency,failover (default: all).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where report.md, report.json and the PNGs go.")
    ] = None,
) -> None:
    """Run the benchmarks against the bundled emulator (the same as `python -m bench`)."""
    checkout = Path(__file__).resolve().parent.parent  # bench/ lives beside workers/ in a checkout
    if (checkout / "bench" / "__main__.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        from bench.__main__ import main as run_benchmarks
    except ImportError as e:
        console.print(f"[red]the benchmarks ship with the source checkout, not the package:[/] {e}")
        raise typer.Exit(EXIT_USAGE) from None
    argv = ["--full"] if full else []
    if only:
        argv += ["--only", only]
    if out_dir is not None:
        argv += ["--out", str(out_dir)]
    run_benchmarks(argv)
