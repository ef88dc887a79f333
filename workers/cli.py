"""The ``quorum`` command (Typer + Rich). Thin: it parses, calls the library and prints."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from orchestration.config import Settings, load_settings
from orchestration.errors import ConfigError, QuorumError

cli = typer.Typer(help="Quorum: LLM extraction and generation jobs on a Celery fleet.", no_args_is_help=True)
console = Console(stderr=True)
#: Piped output keeps full tables (Rich would squeeze them to 80 columns).
out = Console(width=None if sys.stdout.isatty() else 200)

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
    from workers.embedded import state_redis

    settings = _settings()
    settings.provider(provider)
    from orchestration.state.breaker import RedisBreaker

    RedisBreaker(state_redis(settings), settings.key_prefix, settings.breaker).reset(provider)
    console.print(f"{provider}: breaker closed")


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    secs = max(0.0, now - ts)
    return (
        f"{secs:.0f}s ago"
        if secs < 120
        else f"{secs / 60:.0f}m ago"
        if secs < 7200
        else f"{secs / 3600:.1f}h ago"
    )


@cli.command()
def status(
    detailed: Annotated[bool, typer.Option("--detailed", help="Add calls, tokens, cost, cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Per-provider breaker state, health, errors and latency (from Redis alone).

    Exit code 0 when every enabled provider is healthy, 1 when some are not, 3 when Redis is
    unreachable.
    """
    raise typer.Exit(render_status(_settings(), detailed=detailed, as_json=as_json))


def render_status(settings: Settings, *, detailed: bool, as_json: bool) -> int:
    """Print the status report; return the exit code (0 healthy, 1 some unhealthy, 3 no Redis)."""
    import redis as redis_lib

    from orchestration.state.report import as_json as report_json
    from orchestration.state.report import fleet_status
    from workers.embedded import state_redis

    now = time.time()
    try:
        report = fleet_status(state_redis(settings), settings, now, detailed=detailed)
    except redis_lib.RedisError as e:
        console.print(f"[red]Redis unreachable:[/] {e}")
        return EXIT_UNREACHABLE
    code = EXIT_JOB_FAILED if any(p.enabled and not p.healthy for p in report.providers) else EXIT_OK
    if as_json:
        _print_json(report_json(report))
        return code
    table = Table(title=f"Quorum · strategy {report.strategy} · order {', '.join(report.order)}")
    cols = [
        "provider",
        "breaker",
        "health",
        "success",
        "errors",
        "invalid",
        "avg ms",
        "p95 ms",
        "last ok",
        "last failure",
    ]
    if detailed:
        cols += ["calls", "tokens in/out", "cost"]
    for col in cols:
        table.add_column(col)
    colours = {"closed": "green", "half_open": "yellow", "open": "red"}
    for p in report.providers:
        rate = "-" if p.success_rate is None else f"{p.success_rate:.0%}"
        errors = ", ".join(f"{k} {v}" for k, v in sorted(p.errors.items())) or "-"
        failure = _ago(p.last_failure_at, now) + (f": {p.last_error[:60]}" if p.last_error else "")
        row = [
            p.provider if p.enabled else f"[dim]{p.provider}[/]",
            f"[{colours[p.state]}]{p.state}[/]",
            "[green]healthy[/]" if p.healthy else f"[red]{p.reason}[/]",
            rate,
            errors,
            "-" if p.invalid_rate is None else f"{p.invalid_rate:.0%}",
            "-" if p.latency_ewma_ms is None else f"{p.latency_ewma_ms:.0f}",
            "-" if p.latency_p95_ms is None else f"{p.latency_p95_ms:.0f}",
            _ago(p.last_success_at, now),
            failure,
        ]
        if detailed:
            row += [str(p.calls), f"{p.tokens_in}/{p.tokens_out}", f"${p.cost_usd:.4f}"]
        table.add_row(*row)
    out.print(table)
    if detailed:
        rate = "-" if report.cache_hit_rate is None else f"{report.cache_hit_rate:.0%}"
        out.print(
            f"jobs {report.jobs} · cost ${report.cost_usd:.4f}"
            f" · average ${report.avg_cost_per_job_usd:.6f}/job · cache hit rate {rate}"
            f" ({report.cache_hits} hits, {report.cache_misses} misses)"
        )
    return code


@cli.command()
def demo(
    emails: Annotated[int, typer.Option(help="Labelled emails per strategy.")] = 12,
) -> None:
    """Run the whole product on this machine: Valkey, emulator, two workers, three strategies."""
    from workers.demo import run_demo

    settings = _settings()
    failed = run_demo(
        settings,
        emails=emails,
        console=out,
        status=lambda: render_status(settings, detailed=True, as_json=False),
    )
    raise typer.Exit(EXIT_JOB_FAILED if failed else EXIT_OK)


@cli.command()
def schemas(
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write one file per schema here.")] = None,
) -> None:
    """Print (or write) the JSON Schemas of the public job messages and results."""
    from orchestration.generation_models import GenerationRequest, GenerationResult
    from orchestration.models import ExtractionRequest, ExtractionResult

    models = {
        "quorum.extract.request": ExtractionRequest,
        "quorum.extract.result": ExtractionResult,
        "quorum.generate.request": GenerationRequest,
        "quorum.generate.result": GenerationResult,
    }
    docs = {name: model.model_json_schema() for name, model in models.items()}
    if out_dir is None:
        _print_json(docs)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    console.print(f"wrote {len(docs)} schemas to {out_dir}")


@cli.command("set-strategy")
def set_strategy(
    name: Annotated[str, typer.Argument(help="failover, consensus or best_match.")],
    order: Annotated[str | None, typer.Option(help="Provider order, comma-separated: a,b,c.")] = None,
) -> None:
    """Switch the strategy (and provider order) fleet-wide; every worker uses it from its next job."""
    from orchestration.models import EXTRACT_STRATEGIES
    from orchestration.state.fleet import FleetSetting, write_fleet
    from workers.embedded import state_redis

    settings = _settings()
    if name not in EXTRACT_STRATEGIES:
        console.print(f"[red]unknown strategy {name!r}[/]; valid: {', '.join(EXTRACT_STRATEGIES)}")
        raise typer.Exit(EXIT_USAGE)
    names = [p.strip() for p in order.split(",") if p.strip()] if order else None
    unknown = [p for p in names or [] if p not in settings.providers]
    if unknown:
        console.print(
            f"[red]unknown provider(s) {', '.join(unknown)}[/]; configured: {', '.join(settings.providers)}"
        )
        raise typer.Exit(EXIT_USAGE)
    write_fleet(
        state_redis(settings),
        settings.key_prefix,
        FleetSetting(strategy=name, order=names, updated_at=time.time()),
    )
    console.print(f"fleet strategy: {name}" + (f", order {', '.join(names)}" if names else ""))


@cli.command("test")
def test_provider(
    provider: Annotated[str, typer.Argument(help="Provider name from the config.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Make one real call to a provider: latency, tokens and cost, or the mapped error."""
    import os

    from orchestration.data import load_emails
    from orchestration.models import SamplingParams
    from orchestration.pricing import cost_micro_usd, usd
    from orchestration.providers.registry import build_provider
    from orchestration.schemas import EMAIL_ENTITIES

    settings = _settings()
    config = settings.provider(provider)
    try:
        adapter = build_provider(provider, config, emulator_url=settings.emulator_url, env=os.environ)
        result = adapter.extract(load_emails()[0].text, EMAIL_ENTITIES, SamplingParams())
    except QuorumError as e:
        if as_json:
            _print_json({"provider": provider, "ok": False, "error": e.to_dict()})
        else:
            console.print(
                f"[red]{provider}: {e.kind}[/] {e} (status={e.status}, retry_after={e.retry_after})"
            )
        raise typer.Exit(EXIT_JOB_FAILED) from None
    cost = usd(cost_micro_usd(config, result.tokens_in, result.tokens_out))
    outcome = {
        "provider": provider,
        "ok": True,
        "model": result.model,
        "latency_ms": round(result.latency_ms, 1),
        "tokens_in": result.tokens_in,
        "tokens_out": result.tokens_out,
        "cost_usd": cost,
        "fields": {k: v.model_dump() for k, v in result.fields.items()},
    }
    if as_json:
        _print_json(outcome)
        return
    out.print(
        f"[green]{provider} ok[/] · {result.model} · {result.latency_ms:.0f} ms · "
        f"{result.tokens_in}+{result.tokens_out} tokens · ${cost:.6f}"
    )


@cli.command()
def worker(
    concurrency: Annotated[int | None, typer.Option("-c", help="Threads (default from config).")] = None,
) -> None:
    """Run a worker (the documented `celery -A workers.app worker`), on the embedded Valkey if none is set."""
    import os

    from workers import embedded

    settings = _settings()
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


@cli.command()
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


def main() -> None:
    """Console-script entry point."""
    try:
        cli()
    except QuorumError as e:
        console.print(f"[red]{e.kind}:[/] {e}")
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
