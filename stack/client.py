"""Producer side: send jobs by name and wait for them, as any upstream producer would."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import redis as redis_lib
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from celery.utils import uuid

from orchestration.config import Settings
from orchestration.errors import QuorumError
from stack import embedded
from workers import tracing
from workers.app import create_app
from workers.canvas import redacted_kwargs
from workers.job_errors import job_error

#: Shows that a job is running (a spinner) while the block inside it waits; given the job id.
Waiting = Callable[[str], AbstractContextManager[object]]


class JobStillRunning(Exception):
    """The wait ended before the job did: the job goes on, look it up later by its id."""

    def __init__(self, job_id: str, timeout: float, *, local_stack: bool = False) -> None:
        super().__init__(f"job {job_id} not finished after {timeout:g} s")
        self.job_id, self.timeout, self.local_stack = job_id, timeout, local_stack


def submit(app: Celery, task: str, kwargs: dict[str, Any]) -> Any:
    """Send a public job by name; Flower shows the text as length and hash, not content. With
    OpenTelemetry configured here as well, the job's trace starts at this send."""
    job_id = uuid()
    with tracing.sending(task, job_id):
        return app.send_task(
            task, kwargs=kwargs, task_id=job_id, kwargsrepr=redacted_kwargs(kwargs), argsrepr="()"
        )


def wait(result: AsyncResult, timeout: float, waiting: Waiting, *, local_stack: bool = False) -> Any:
    """The job's result, or :class:`JobStillRunning` naming its id when ``timeout`` runs out."""
    with waiting(result.id):
        try:
            return result.get(timeout=timeout)
        except CeleryTimeoutError:
            pass
        except QuorumError as e:  # the typed error with every detail (from its error payload)
            raise (job_error(result) or e) from None
    job_id = result.id
    # Stop listening now, while the app is open (not in __del__ at interpreter exit).
    result.backend.remove_pending_result(result)
    del result
    raise JobStillRunning(job_id, timeout, local_stack=local_stack)


def check_reachable(url: str) -> None:
    """Fail in about a second (a ``redis.ConnectionError``) rather than after Celery's retries."""
    client = redis_lib.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        client.ping()
    finally:
        client.close()


def run_local_job(
    settings: Settings,
    kwargs: dict[str, Any],
    *,
    timeout: float,
    workers: int = 1,
    say: Callable[[str], None] = print,
    task: str = "quorum.extract",
    waiting: Waiting = lambda job_id: contextlib.nullcontext(),
) -> dict[str, Any]:
    """Run one job on this machine: reuse running workers, else start a local stack for it.

    With no Redis configured, the embedded server is started (and said so) and stopped again.
    """
    from stack.local import LocalStack

    if settings.redis_url:
        url, started = settings.redis_url, False
        check_reachable(url)
    else:
        url, started = embedded.ensure_running()
        say(f"{'Started' if started else 'Using'} embedded Valkey at {url} (data: {embedded.data_dir()})")
    app = create_app(settings.model_copy(update={"redis_url": url}))
    try:
        if app.control.ping(timeout=0.5):  # a fleet is already serving this Redis
            return wait(submit(app, task, kwargs), timeout, waiting)  # type: ignore[no-any-return]
        with LocalStack(settings.model_copy(update={"redis_url": url}), workers=workers, say=say):
            return wait(submit(app, task, kwargs), timeout, waiting, local_stack=True)  # type: ignore[no-any-return]
    finally:
        app.close()
        if started:  # this command started the embedded server: leave nothing running
            embedded.stop()
