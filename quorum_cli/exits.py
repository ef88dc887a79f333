"""The ``quorum`` command's exit codes and its one-line answer to each mistake.

Every command runs inside :class:`QuorumGroup`, which turns an exception into a line or two that
name the problem and the fix, and a documented exit code; ``quorum --debug ...`` shows the
traceback instead.
"""

from __future__ import annotations

import sys
from typing import Any

import redis as redis_lib
import typer
from kombu.exceptions import OperationalError
from typer.core import TyperGroup
from typer.exceptions import TyperException

from orchestration.errors import ConfigError, InvalidRequestError, QuorumError
from quorum_cli.output import console
from stack.embedded import NoRedisError

EXIT_OK = 0
EXIT_JOB_FAILED = 1  # the job failed (or `status`: an enabled provider is unhealthy)
EXIT_USAGE = 2  # bad arguments, input file or configuration
EXIT_UNREACHABLE = 3  # Redis unreachable, or none configured or running
EXIT_STILL_RUNNING = 4  # the wait ended before the job did: look it up with `quorum result`
EXIT_INTERNAL = 5  # a bug: rerun with --debug and report the traceback
EXIT_INTERRUPTED = 130  # ^C

#: The table the README shows (``quorum --help`` too).
EXIT_CODES = {
    EXIT_OK: "success (`status`: every enabled provider healthy)",
    EXIT_JOB_FAILED: "the job failed (`status`: some enabled provider unhealthy; `test`: the call failed)",
    EXIT_USAGE: "usage: bad option, input file, schema, configuration, or a job refusing its input",
    EXIT_UNREACHABLE: "Redis unreachable, or none configured or running",
    EXIT_STILL_RUNNING: "the wait timed out; the job goes on (`quorum result JOB_ID`)",
    EXIT_INTERNAL: "unexpected error (a bug): rerun with `--debug` and report it",
    EXIT_INTERRUPTED: "interrupted (^C)",
}


class InputError(Exception):
    """A command's own input is unusable (unreadable file, bad JSON...): exit 2, the message says why."""


def explain(error: BaseException) -> tuple[str, int]:
    """``(one or two lines naming the problem and the fix, exit code)`` for an exception."""
    client = sys.modules.get("stack.client")  # imports the Celery app: only if a command did
    if client is not None and isinstance(error, client.JobStillRunning):
        where = (
            "\n  the local workers stop with this command: start a fleet (`quorum worker`) to finish it"
            if error.local_stack
            else ""
        )
        return f"{error}; look it up later with: quorum result {error.job_id}{where}", EXIT_STILL_RUNNING
    if isinstance(error, NoRedisError):
        return str(error), EXIT_UNREACHABLE
    if (
        isinstance(error, redis_lib.AuthenticationError | redis_lib.ResponseError)
        and "auth" in str(error).lower()
    ):
        return (
            f"Redis refused the credentials ({error}): check the password in QUORUM_REDIS_URL",
            EXIT_UNREACHABLE,
        )
    if isinstance(error, redis_lib.ConnectionError | redis_lib.TimeoutError | OperationalError):
        return (
            f"Redis unreachable: {error}\n"
            "  start it, or fix QUORUM_REDIS_URL (`quorum redis` starts an embedded one)",
            EXIT_UNREACHABLE,
        )
    if isinstance(error, ConfigError):
        return f"config error: {error}", EXIT_USAGE
    if isinstance(error, InvalidRequestError):
        return f"{error.kind}: {error}", EXIT_USAGE
    if isinstance(error, QuorumError):
        return f"{error.kind}: {error}", EXIT_JOB_FAILED
    if isinstance(error, InputError):
        return str(error), EXIT_USAGE
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    return (
        f"unexpected error: {type(error).__name__}: {error}\n"
        "  rerun with `quorum --debug ...` for the traceback",
        EXIT_INTERNAL,
    )


class QuorumGroup(TyperGroup):
    """The command group: every command's mistakes become a line and an exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # usage errors: Typer's own line, exit 2
            raise
        except (Exception, KeyboardInterrupt) as e:
            if ctx.params.get("debug"):
                raise
            message, code = explain(e)
            console.print(message, style="red", markup=False, highlight=False)
            raise typer.Exit(code) from None
