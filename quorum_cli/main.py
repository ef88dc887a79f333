"""The ``quorum`` command (Typer + Rich): the root that gathers the command groups.

Thin: each command parses, calls the library and prints. Mistakes are answered in a line or two
with a documented exit code (:mod:`quorum_cli.exits`). Only the commands that run something
(``demo``, ``worker``, ``redis``, ``extract``/``generate`` with no fleet configured) start the
embedded Valkey, and they say so.
"""

from __future__ import annotations

from typing import Annotated

import typer

from quorum_cli import bench, fleet, jobs, local
from quorum_cli.exits import EXIT_CODES, QuorumGroup

cli = typer.Typer(
    cls=QuorumGroup,
    help="Quorum: LLM extraction and generation jobs on a Celery fleet.\n\nExit codes: "
    + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for group in (jobs, fleet, local, bench):
    cli.add_typer(group.commands)


@cli.callback()
def main_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """Quorum: LLM extraction and generation jobs on a Celery fleet."""


def main() -> None:
    """Console-script entry point (errors are answered by :class:`QuorumGroup`)."""
    cli(prog_name="quorum")
