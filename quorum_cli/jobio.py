"""What ``quorum extract``/``generate``/``result`` read and print: input files, candidate specs,
schemas, the spinner shown while a job runs, and the result as a table, text or JSON."""

from __future__ import annotations

import contextlib
import json
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestration.models import Candidate, SamplingParams
from quorum_cli.exits import InputError
from stack.client import Waiting

#: ``--candidate`` keys and the sampling parameter each sets.
PARAM_KEYS = {"temperature": "temperature", "t": "temperature", "top_p": "top_p", "p": "top_p",
              "max_tokens": "max_tokens"}  # fmt: skip


def read_text(file: str, encoding: str = "utf-8") -> str:
    """The text of ``file`` (``-``: standard input), or :class:`InputError` saying what to do."""
    name = "standard input" if file == "-" else file
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"{file}: no such file; pass an existing file, or - to read standard input"
        ) from None
    except IsADirectoryError:
        raise InputError(f"{file} is a directory; pass a file, or - to read standard input") from None
    except OSError as e:
        raise InputError(f"cannot read {file}: {e.strerror}") from None
    try:
        return data.decode(encoding)
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}; e.g. --encoding latin-1") from None
    except UnicodeDecodeError as e:
        raise InputError(
            f"{name} is not {encoding} text (byte 0x{data[e.start]:02x} at offset {e.start});"
            " pass its encoding, e.g. --encoding latin-1 (or cp1252)"
        ) from None


def read_schema(file: Path) -> dict[str, Any]:
    """A JSON Schema from ``file`` (validated by the job itself), or :class:`InputError`."""
    try:
        doc = json.loads(read_text(str(file)))
    except json.JSONDecodeError as e:
        raise InputError(f"{file}: not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{file}: a JSON Schema is a JSON object, got {type(doc).__name__}")
    return doc


def parse_candidate(spec: str) -> Candidate:
    """``openai`` or ``openai:temperature=0.2,top_p=0.9`` (``t``/``p`` for short) as a candidate."""
    provider, _, rest = spec.partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in PARAM_KEYS:
            raise InputError(
                f"--candidate {spec!r}: expected PROVIDER[:temperature=T,top_p=P,max_tokens=N], got {item!r}"
            )
        params[PARAM_KEYS[key.strip()]] = value.strip()
    try:
        return Candidate(provider=provider.strip(), params=SamplingParams.model_validate(params))
    except ValueError as e:
        raise InputError(f"--candidate {spec!r}: {e}".splitlines()[0]) from None


def spinner(console: Console, enabled: bool) -> Waiting:
    """A spinner with the elapsed time while a job runs, when ``enabled`` (a terminal, no --json)."""

    def waiting(job_id: str) -> AbstractContextManager[object]:
        if not enabled:
            return contextlib.nullcontext()
        progress = Progress(
            SpinnerColumn(),
            TextColumn(f"job {job_id}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        progress.add_task("wait", total=None)
        return progress

    return waiting


def print_result(out: Console, result: dict[str, Any]) -> None:
    """An extraction as a table of fields, a generation as its text; then tokens, cost, latency."""
    if result.get("kind") == "generate":
        out.print(result.get("text") or f"[red]no answer[/]: {result.get('reason')}")
        summary = f"{result['selector']} · {result.get('chosen') or '-'} · {result.get('calls', 0)} calls"
    else:
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
        summary = result["strategy"]
    out.print(
        f"{summary} · cost ${result['cost_usd']:.6f} · {result['tokens_in']}+{result['tokens_out']} tokens · "
        f"{result['latency_ms']:.0f} ms · cached={result['cached']} · job {result.get('job_id', '-')}"
    )
