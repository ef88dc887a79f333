"""The ``quorum`` command (Typer + Rich). Thin: it parses, calls the library and prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from orchestration.config import Settings, load_settings
from orchestration.errors import ConfigError, QuorumError

cli = typer.Typer(help="Quorum: LLM extraction and generation jobs on a Celery fleet.", no_args_is_help=True)
console = Console(stderr=True)
out = Console()

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as e:
        console.print(f"[red]config error:[/] {e}")
        raise typer.Exit(EXIT_USAGE) from None


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


@cli.command()
def emulator(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8900,
    profile: Annotated[Path | None, typer.Option(help="Profile TOML (latency, faults, noise).")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; keep it on loopback.")] = "127.0.0.1",
) -> None:
    """Serve the OpenAI, Anthropic and Gemini APIs with emulated providers."""
    from orchestration.emulator.server import serve

    serve(host, port, profile)


@cli.command()
def redis(stop: Annotated[bool, typer.Option("--stop", help="Stop the embedded server.")] = False) -> None:
    """Start (or stop) the embedded Valkey server and print its URL."""
    from workers import embedded

    if stop:
        console.print("stopped" if embedded.stop() else "not running")
        return
    url, started = embedded.ensure_running()
    console.print(f"{'started' if started else 'running'}: data in {embedded.data_dir()}")
    out.print(url)


@cli.command()
def extract(
    file: Annotated[str, typer.Argument(help="Email file, or - for standard input.")] = "-",
    strategy: Annotated[str | None, typer.Option(help="failover, consensus or best_match.")] = None,
    provider: Annotated[list[str] | None, typer.Option(help="Provider (repeat for an order).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 120.0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the result cache.")] = False,
    workers: Annotated[int, typer.Option(help="Workers to start when none is running.")] = 1,
) -> None:
    """Enqueue an extraction job, wait for it and print the result."""
    from workers.client import run_local_job

    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    kwargs: dict[str, Any] = {"text": text, "use_cache": not no_cache}
    if strategy:
        kwargs["strategy"] = strategy
    if provider:
        kwargs["providers"] = provider
    try:
        result = run_local_job(_settings(), kwargs, timeout=timeout, workers=workers, say=console.print)
    except QuorumError as e:
        if as_json:
            _print_json({"error": e.to_dict()})
        else:
            console.print(f"[red]{e.kind}:[/] {e}")
        raise typer.Exit(EXIT_JOB_FAILED) from None
    if as_json:
        _print_json(result)
        return
    table = Table(title=f"{result['strategy']} · {result.get('chosen') or 'merged'}")
    for col in ("field", "value", "confidence", "agreement", "sources"):
        table.add_column(col)
    for name, f in result["fields"].items():
        table.add_row(
            name,
            "" if f["value"] is None else str(f["value"]),
            f"{f['confidence']:.2f}",
            f"{f['agreement']:.2f}",
            ", ".join(f["sources"]),
        )
    out.print(table)
    out.print(
        f"cost ${result['cost_usd']:.6f} · {result['tokens_in']}+{result['tokens_out']} tokens · "
        f"{result['latency_ms']:.0f} ms · cached={result['cached']}"
    )


@cli.command()
def reset(provider: Annotated[str, typer.Argument(help="Provider name.")]) -> None:
    """Close a provider's circuit breaker by hand."""
    from workers.client import state_redis

    settings = _settings()
    settings.provider(provider)
    from orchestration.state.breaker import RedisBreaker

    RedisBreaker(state_redis(settings), settings.key_prefix, settings.breaker).reset(provider)
    console.print(f"{provider}: breaker closed")


def main() -> None:
    """Console-script entry point."""
    try:
        cli()
    except QuorumError as e:
        console.print(f"[red]{e.kind}:[/] {e}")
        sys.exit(EXIT_USAGE)
