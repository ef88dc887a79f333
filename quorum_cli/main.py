"""The ``quorum`` command (Typer + Rich). Thin: it parses, calls the library and prints.

Mistakes are answered in a line or two with a documented exit code (:mod:`quorum_cli.exits`).
Only the commands that run something (``demo``, ``worker``, ``redis``, ``extract``/``generate``
with no fleet configured) start the embedded Valkey, and they say so.
"""

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
from orchestration.errors import InvalidRequestError, QuorumError
from quorum_cli.exits import (
    EXIT_CODES,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_STILL_RUNNING,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    QuorumGroup,
)

cli = typer.Typer(
    cls=QuorumGroup,
    help="Quorum: LLM extraction and generation jobs on a Celery fleet.\n\nExit codes: "
    + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)
#: Piped output keeps full tables (Rich would squeeze them to 80 columns).
out = Console(width=None if sys.stdout.isatty() else 200)

#: The emulator's port everywhere (this command, .env.example, quorum.example.toml, README).
EMULATOR_PORT = 8765


@cli.callback()
def main_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """Quorum: LLM extraction and generation jobs on a Celery fleet."""


def _settings() -> Settings:
    return load_settings()  # a ConfigError is answered by QuorumGroup (exit 2)


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


@cli.command()
def emulator(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = EMULATOR_PORT,
    profile: Annotated[Path | None, typer.Option(help="Profile TOML (latency, faults, noise).")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; keep it on loopback.")] = "127.0.0.1",
) -> None:
    """Serve the OpenAI, Anthropic and Gemini APIs with emulated providers."""
    from emulator.server import serve

    serve(host, port, profile)


@cli.command()
def redis(stop: Annotated[bool, typer.Option("--stop", help="Stop the embedded server.")] = False) -> None:
    """Start (or stop) the embedded Valkey server and print its URL."""
    from stack import embedded

    if stop:
        console.print("stopped" if embedded.stop() else "not running")
        return
    url, started = embedded.ensure_running()
    console.print(f"{'Started' if started else 'Running:'} embedded Valkey (data: {embedded.data_dir()})")
    out.print(url)


Timeout = Annotated[float, typer.Option(help="Seconds to wait; the job goes on after (quorum result).")]
Deadline = Annotated[float | None, typer.Option(help="The job's own deadline in seconds (config default).")]
Encoding = Annotated[str, typer.Option(help="Encoding of the input file.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON (no spinner).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Bypass the result cache.")]
Workers = Annotated[int, typer.Option(help="Workers to start when none is running.")]
Providers = Annotated[list[str] | None, typer.Option("--provider", help="Provider (repeat for an order).")]
Candidates = Annotated[
    list[str] | None,
    typer.Option("--candidate", help="PROVIDER[:temperature=T,top_p=P,max_tokens=N] (repeat)."),
]
Variations = Annotated[str | None, typer.Option(help="A variation grid from the config.")]


def _run_job(
    task: str, kwargs: dict[str, Any], *, timeout: float, workers: int, as_json: bool, no_cache: bool
) -> None:
    """Send one job, wait with a spinner (on a terminal, without --json) and print the answer."""
    from quorum_cli.jobio import print_result, spinner
    from stack.client import run_local_job

    kwargs = {k: v for k, v in kwargs.items() if v not in (None, [])} | {"use_cache": not no_cache}
    waiting = spinner(console, not as_json and console.is_terminal and out.is_terminal)
    try:
        result = run_local_job(
            _settings(),
            kwargs,
            timeout=timeout,
            workers=workers,
            say=console.print,
            task=task,
            waiting=waiting,
        )
    except QuorumError as e:
        if as_json:
            _print_json({"error": e.to_dict()})
        else:
            console.print(f"[red]{e.kind}:[/] {e}", highlight=False)
        # The job refused its own input (unknown or disabled provider...): a usage error.
        raise typer.Exit(EXIT_USAGE if isinstance(e, InvalidRequestError) else EXIT_JOB_FAILED) from None
    if as_json:
        _print_json(result)
    else:
        print_result(out, result)


@cli.command()
def extract(
    file: Annotated[str, typer.Argument(help="Email file, or - for standard input.")] = "-",
    strategy: Annotated[str | None, typer.Option(help="failover, consensus or best_match.")] = None,
    provider: Providers = None,
    candidate: Candidates = None,
    variations: Variations = None,
    schema: Annotated[Path | None, typer.Option(help="JSON Schema file of the fields to extract.")] = None,
    deadline: Deadline = None,
    as_json: Json = False,
    timeout: Timeout = 120.0,
    no_cache: NoCache = False,
    workers: Workers = 1,
    encoding: Encoding = "utf-8",
) -> None:
    """Enqueue an extraction job, wait for it and print the result."""
    from quorum_cli.jobio import parse_candidate, read_schema, read_text

    kwargs: dict[str, Any] = {
        "text": read_text(file, encoding),
        "strategy": strategy,
        "providers": provider,
        "candidates": [parse_candidate(c).model_dump(mode="json") for c in candidate or []],
        "variations": variations,
        "json_schema": read_schema(schema) if schema else None,
        "deadline_s": deadline,
    }
    _run_job("quorum.extract", kwargs, timeout=timeout, workers=workers, as_json=as_json, no_cache=no_cache)


@cli.command()
def generate(
    file: Annotated[str, typer.Argument(help="Prompt file, or - for standard input.")] = "-",
    selector: Annotated[
        str | None,
        typer.Option(help="majority, quality_weighted, hybrid_merge, tournament or confidence_threshold."),
    ] = None,
    provider: Providers = None,
    candidate: Candidates = None,
    variations: Variations = None,
    language: Annotated[str | None, typer.Option(help="Language of a code answer, e.g. python.")] = None,
    requirement: Annotated[
        list[str] | None, typer.Option(help="A requirement the answer must meet (repeat).")
    ] = None,
    deadline: Deadline = None,
    as_json: Json = False,
    timeout: Timeout = 120.0,
    no_cache: NoCache = False,
    workers: Workers = 1,
    encoding: Encoding = "utf-8",
) -> None:
    """Enqueue a generation job (free text or code), wait for it and print the chosen answer."""
    from quorum_cli.jobio import parse_candidate, read_text

    kwargs: dict[str, Any] = {
        "prompt": read_text(file, encoding),
        "selector": selector,
        "providers": provider,
        "candidates": [parse_candidate(c).model_dump(mode="json") for c in candidate or []],
        "variations": variations,
        "language": language,
        "requirements": requirement,
        "deadline_s": deadline,
    }
    _run_job("quorum.generate", kwargs, timeout=timeout, workers=workers, as_json=as_json, no_cache=no_cache)


@cli.command()
def result(
    job_id: Annotated[str, typer.Argument(help="The job id extract/generate printed.")],
    as_json: Json = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for a job still running.")] = 0.0,
) -> None:
    """Look a job up by its id: its answer, its error, or that it is still running (exit 4)."""
    from celery.exceptions import TimeoutError as CeleryTimeoutError

    from quorum_cli.jobio import print_result
    from stack.client import check_reachable
    from stack.embedded import describe, state_url
    from workers.app import create_app

    settings = _settings()
    url = state_url(settings)
    check_reachable(url)
    app = create_app(settings.model_copy(update={"redis_url": settings.redis_url or url}))
    try:
        job = app.AsyncResult(job_id)
        try:
            if job.state == "PENDING" and not wait:  # Celery can't tell queued, running or unknown
                raise CeleryTimeoutError
            answer = job.get(timeout=wait or None)
        except CeleryTimeoutError:
            console.print(
                f"job {job_id} has no result in {describe(url)} yet (queued, running, expired or unknown);"
                f" try again later, or wait: quorum result {job_id} --wait 60",
                style="yellow",
                markup=False,
            )
            raise typer.Exit(EXIT_STILL_RUNNING) from None
        except QuorumError as e:
            if as_json:
                _print_json({"error": e.to_dict()})
            else:
                console.print(f"[red]{e.kind}:[/] {e}")
            raise typer.Exit(EXIT_JOB_FAILED) from None
    finally:
        app.close()
    if as_json:
        _print_json(answer)
    else:
        print_result(out, answer)


@cli.command()
def reset(provider: Annotated[str, typer.Argument(help="Provider name.")]) -> None:
    """Close a provider's circuit breaker by hand."""
    from stack.embedded import state_redis

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

    Reads the configured Redis, else the running embedded one (it never starts one), and says
    which. Exit code 0 when every enabled provider is healthy, 1 when some are not, 3 when Redis
    is unreachable or none is configured or running.
    """
    raise typer.Exit(render_status(_settings(), detailed=detailed, as_json=as_json))


def render_status(settings: Settings, *, detailed: bool, as_json: bool) -> int:
    """Print the status report; return the exit code (0 healthy, 1 some unhealthy, 3 no Redis)."""
    import redis as redis_lib

    from orchestration.state.report import as_json as report_json
    from orchestration.state.report import fleet_status
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
        _print_json({**report_json(report), "redis": where, "key_prefix": settings.key_prefix})
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


@cli.command()
def demo(
    emails: Annotated[int, typer.Option(help="Labelled emails per strategy.")] = 12,
) -> None:
    """Run the whole product on this machine: Valkey, emulator, two workers, three strategies.

    It runs in its own namespace (its own embedded Valkey and key prefix): your state is untouched.
    """
    from quorum_cli.demo import run_demo

    failed = run_demo(
        _settings(),
        emails=emails,
        console=out,
        status=lambda demo_settings: render_status(demo_settings, detailed=True, as_json=False),
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
    from stack.embedded import describe, state_redis, state_url

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


@cli.command("test")
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
    from orchestration.providers.registry import build_provider
    from orchestration.schemas import EMAIL_ENTITIES

    settings = _settings()
    config = settings.provider(provider)
    target = f"the emulator at {settings.emulator_url}" if settings.emulator_url else "the real API"
    console.print(
        f"{provider}: calling {target}, with this shell's environment (pid {os.getpid()})", highlight=False
    )
    try:
        adapter = build_provider(provider, config, emulator_url=settings.emulator_url, env=os.environ)
        result = adapter.extract(load_emails()[0].text, EMAIL_ENTITIES, SamplingParams())
    except QuorumError as e:
        if e.details.get("reason") == "missing_key":
            e = type(e)(
                f"{provider}: no API key: {e.details.get('key_env')} is not set in this shell's environment "
                "(`quorum test` calls from its own process; set it here, or QUORUM_EMULATOR_URL)",
                e.details,
            )
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

    from stack import embedded

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

    settings = _settings()
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


# -- quorum acl: Redis ACL rules of the fleet's roles (rules and rationale in workers/acl.py) --
@cli.command()
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

    settings = _settings()
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


def main() -> None:
    """Console-script entry point (errors are answered by :class:`QuorumGroup`)."""
    cli()


if __name__ == "__main__":
    main()
