"""``quorum demo``, ``worker``, ``redis`` and ``emulator``: run the product's processes on this
machine (the embedded Valkey, the emulator, workers)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestration.config import load_settings
from quorum_cli.exits import EXIT_JOB_FAILED, EXIT_OK
from quorum_cli.output import console, out

commands = typer.Typer()
#: Where ``quorum --help`` lists these commands.
PANEL = "This machine"

#: The emulator's port everywhere (this command, .env.example, quorum.example.toml, README).
EMULATOR_PORT = 8765


@commands.command(rich_help_panel=PANEL)
def demo(
    emails: Annotated[int, typer.Option(help="Labelled emails per strategy.")] = 12,
) -> None:
    """Run the whole product on this machine: Valkey, emulator, two workers, three strategies.

    It runs in its own namespace (its own embedded Valkey and key prefix): your state is untouched.
    """
    from quorum_cli.demo import run_demo
    from quorum_cli.fleet import render_status

    failed = run_demo(
        load_settings(),
        emails=emails,
        console=out,
        status=lambda demo_settings: render_status(demo_settings, detailed=True, as_json=False),
    )
    raise typer.Exit(EXIT_JOB_FAILED if failed else EXIT_OK)


@commands.command(rich_help_panel=PANEL)
def worker(
    concurrency: Annotated[int | None, typer.Option("-c", help="Threads (default from config).")] = None,
) -> None:
    """Run a worker (the documented `celery -A workers.app worker`), on the embedded Valkey if none is set."""
    import os

    from stack import embedded

    settings = load_settings()
    env = dict(os.environ)
    if not settings.redis_url and not settings.broker_url:
        url, started = embedded.ensure_running()
        console.print(
            f"{'Started' if started else 'Using'} embedded Valkey at {url} (data: {embedded.data_dir()})"
        )
        env["QUORUM_REDIS_URL"] = url
    cmd = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-l", "INFO"]
    if concurrency:
        cmd += ["-c", str(concurrency)]
    os.execvpe(cmd[0], cmd, env)


@commands.command(rich_help_panel=PANEL)
def redis(stop: Annotated[bool, typer.Option("--stop", help="Stop the embedded server.")] = False) -> None:
    """Start (or stop) the embedded Valkey server and print its URL."""
    from stack import embedded

    if stop:
        console.print("stopped" if embedded.stop() else "not running")
        return
    url, started = embedded.ensure_running()
    console.print(f"{'Started' if started else 'Running:'} embedded Valkey (data: {embedded.data_dir()})")
    out.print(url)


@commands.command(rich_help_panel=PANEL)
def emulator(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = EMULATOR_PORT,
    profile: Annotated[Path | None, typer.Option(help="Profile TOML (latency, faults, noise).")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; keep it on loopback.")] = "127.0.0.1",
) -> None:
    """Serve the OpenAI, Anthropic and Gemini APIs with emulated providers."""
    from emulator.server import serve

    serve(host, port, profile)
