"""``quorum status``, ``set-strategy``, ``reset``, ``test``, ``metrics`` and ``acl``: watch and
steer a running fleet through its shared state in Redis (none of them starts a server)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.table import Table

from orchestration.config import Settings, load_settings
from orchestration.errors import QuorumError
from quorum_cli.exits import EXIT_JOB_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from quorum_cli.output import console, out, print_json

commands = typer.Typer()
#: Where ``quorum --help`` lists these commands.
PANEL = "Fleet"


@commands.command(rich_help_panel=PANEL)
def status(
    detailed: Annotated[bool, typer.Option("--detailed", help="Add calls, tokens, cost, cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Per-provider breaker state, health, errors and latency (from Redis alone).

    Reads the configured Redis, else the running embedded one (it never starts one), and says
    which. Exit code 0 when every enabled provider is healthy, 1 when some are not, 3 when Redis
    is unreachable or none is configured or running.
    """
    raise typer.Exit(render_status(load_settings(), detailed=detailed, as_json=as_json))


def render_status(settings: Settings, *, detailed: bool, as_json: bool) -> int:
    """Print the status report; return the exit code (0 healthy, 1 some unhealthy, 3 no Redis)."""
    import redis as redis_lib

    from orchestration.status import as_json as report_json
    from orchestration.status import fleet_status
    from stack.embedded import describe, state_redis, state_url

    now = time.time()
    where = describe(state_url(settings))
    try:
        report = fleet_status(state_redis(settings), settings, now, detailed=detailed)
    except redis_lib.RedisError as e:
        console.print(f"[red]Redis unreachable at {where}:[/] {e}", highlight=False)
        return EXIT_UNREACHABLE
    code = EXIT_JOB_FAILED if any(p.enabled and not p.healthy for p in report.providers) else EXIT_OK
    if as_json:
        print_json({**report_json(report), "redis": where, "key_prefix": settings.key_prefix})
        return code
    table = Table(
        title=f"Quorum · strategy {report.strategy} · order {', '.join(report.order)}",
        caption=f"Redis {where} · prefix {settings.key_prefix}",
    )
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


@commands.command("set-strategy", rich_help_panel=PANEL)
def set_strategy(
    name: Annotated[str, typer.Argument(help="failover, consensus or best_match.")],
    order: Annotated[str | None, typer.Option(help="Provider order, comma-separated: a,b,c.")] = None,
) -> None:
    """Switch the strategy (and provider order) fleet-wide; every worker uses it from its next job."""
    from orchestration.models import EXTRACT_STRATEGIES
    from orchestration.state import FleetSetting, write_fleet
    from stack.embedded import describe, state_redis, state_url

    settings = load_settings()
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
    disabled = [p for p in names or [] if not settings.providers[p].enabled]
    if disabled:  # enabled = false means never called: refuse rather than store a dead order
        console.print(
            f"[red]disabled provider(s) {', '.join(disabled)}[/] (enabled = false in the config); "
            f"enabled: {', '.join(settings.enabled_providers())}"
        )
        raise typer.Exit(EXIT_USAGE)
    write_fleet(
        state_redis(settings),
        settings.key_prefix,
        FleetSetting(strategy=name, order=names, updated_at=time.time()),
    )
    where = describe(state_url(settings))
    console.print(
        f"fleet strategy: {name}" + (f", order {', '.join(names)}" if names else "") + f" (Redis {where})"
    )


@commands.command(rich_help_panel=PANEL)
def reset(provider: Annotated[str, typer.Argument(help="Provider name.")]) -> None:
    """Close a provider's circuit breaker by hand."""
    from stack.embedded import state_redis

    settings = load_settings()
    settings.provider(provider)
    from orchestration.breaker import RedisBreaker

    RedisBreaker(state_redis(settings), settings.key_prefix, settings.breaker).reset(provider)
    console.print(f"{provider}: breaker closed")


@commands.command("test", rich_help_panel=PANEL)
def test_provider(
    provider: Annotated[str, typer.Argument(help="Provider name from the config.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Make one real call to a provider from this process: latency, tokens and cost, or the error.

    It reads this shell's environment (API keys, QUORUM_EMULATOR_URL), not a worker's: a worker
    started elsewhere may see other values.
    """
    import os

    from orchestration.data import load_emails
    from orchestration.models import SamplingParams
    from orchestration.pricing import cost_micro_usd, usd
    from orchestration.providers import build_provider
    from orchestration.schemas import EMAIL_ENTITIES

    settings = load_settings()
    config = settings.provider(provider)
    target = f"the emulator at {settings.emulator_url}" if settings.emulator_url else "the real API"
    console.print(
        f"{provider}: calling {target}, with this shell's environment (pid {os.getpid()})", highlight=False
    )
    try:
        adapter = build_provider(provider, config, emulator_url=settings.emulator_url, env=os.environ)
        result = adapter.extract(load_emails()[0].text, EMAIL_ENTITIES, SamplingParams())
    except QuorumError as e:
        if e.reason == "missing_key":
            e = type(e)(
                f"{provider}: no API key: {e.key_env} is not set in this shell's environment "
                "(`quorum test` calls from its own process; set it here, or QUORUM_EMULATOR_URL)",
                e.details,
            )
        if as_json:
            print_json({"provider": provider, "ok": False, "error": e.to_dict()})
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
        print_json(outcome)
        return
    out.print(
        f"[green]{provider} ok[/] · {result.model} · {result.latency_ms:.0f} ms · "
        f"{result.tokens_in}+{result.tokens_out} tokens · ${cost:.6f}"
    )


@commands.command(rich_help_panel=PANEL)
def metrics(
    address: Annotated[str, typer.Option(help="Interface to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of /metrics (Prometheus text format).")] = 9464,
) -> None:
    """One Prometheus exporter for the whole fleet: reads Redis on each scrape (breakers, health,
    latency, tokens, cost, budgets, rate limits, cache, jobs by outcome)."""
    from prometheus_client import start_http_server

    from stack.client import check_reachable
    from stack.embedded import describe, state_redis, state_url
    from workers.metrics import registry_for

    settings = load_settings()
    url = state_url(settings)
    check_reachable(url)
    try:
        server, thread = start_http_server(
            port, address, registry=registry_for(state_redis(settings), settings)
        )
    except OSError as e:
        console.print(f"[red]cannot serve on {address}:{port}:[/] {e.strerror}; pick another --port")
        raise typer.Exit(EXIT_USAGE) from None
    console.print(
        f"serving http://{address}:{server.server_port}/metrics from Redis {describe(url)}", highlight=False
    )
    thread.join()


# -- quorum acl: Redis ACL rules of the fleet's roles (rules and rationale in workers/acl.py) --
@commands.command(rich_help_panel=PANEL)
def acl(
    role: Annotated[str, typer.Option(help="producer, worker, ops or all.")] = "all",
    fmt: Annotated[str, typer.Option("--format", help="setuser (pipe to redis-cli) or aclfile.")] = "setuser",
    password_env: Annotated[
        bool,
        typer.Option(
            "--password-env",
            help="Passwords from QUORUM_ACL_<ROLE>_PASSWORD (else placeholders Redis refuses).",
        ),
    ] = False,
) -> None:
    """Print the Redis ACL users of the fleet: `quorum acl --password-env | redis-cli`."""
    import os

    from workers.acl import command_output

    settings = load_settings()
    try:
        text = command_output(
            settings.key_prefix,
            settings.broker_url or settings.redis_url,
            role,
            fmt,
            os.environ if password_env else None,
        )
    except ValueError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(EXIT_USAGE) from None
    sys.stdout.write(text)
