"""``quorum extract``, ``generate``, ``result`` and ``schemas``: send jobs, wait for them, look
them up, and print the public job messages' JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestration.config import load_settings
from orchestration.errors import InvalidRequestError, QuorumError
from quorum_cli.exits import EXIT_JOB_FAILED, EXIT_STILL_RUNNING, EXIT_USAGE
from quorum_cli.output import console, out, print_json

commands = typer.Typer()
#: Where ``quorum --help`` lists these commands.
PANEL = "Jobs"


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
            load_settings(),
            kwargs,
            timeout=timeout,
            workers=workers,
            say=console.print,
            task=task,
            waiting=waiting,
        )
    except QuorumError as e:
        if as_json:
            print_json({"error": e.to_dict()})
        else:
            console.print(f"[red]{e.kind}:[/] {e}", highlight=False)
        # The job refused its own input (unknown or disabled provider...): a usage error.
        raise typer.Exit(EXIT_USAGE if isinstance(e, InvalidRequestError) else EXIT_JOB_FAILED) from None
    if as_json:
        print_json(result)
    else:
        print_result(out, result)


@commands.command(rich_help_panel=PANEL)
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


@commands.command(rich_help_panel=PANEL)
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


@commands.command(rich_help_panel=PANEL)
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

    settings = load_settings()
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
                print_json({"error": e.to_dict()})
            else:
                console.print(f"[red]{e.kind}:[/] {e}")
            raise typer.Exit(EXIT_JOB_FAILED) from None
    finally:
        app.close()
    if as_json:
        print_json(answer)
    else:
        print_result(out, answer)


@commands.command(rich_help_panel=PANEL)
def schemas(
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write one file per schema here.")] = None,
) -> None:
    """Print (or write) the JSON Schemas of the public job messages and results."""
    from orchestration.generation import GenerationRequest, GenerationResult
    from orchestration.models import ExtractionRequest, ExtractionResult

    models = {
        "quorum.extract.request": ExtractionRequest,
        "quorum.extract.result": ExtractionResult,
        "quorum.generate.request": GenerationRequest,
        "quorum.generate.result": GenerationResult,
    }
    docs = {name: model.model_json_schema() for name, model in models.items()}
    if out_dir is None:
        print_json(docs)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    console.print(f"wrote {len(docs)} schemas to {out_dir}")
