"""Producer side: send jobs by name and wait for them, as any upstream producer would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from orchestration.config import Settings
from orchestration.errors import QuorumError
from workers import embedded
from workers.app import create_app
from workers.canvas import redacted_kwargs
from workers.job_errors import job_error


def submit(app: Celery, task: str, kwargs: dict[str, Any]) -> Any:
    """Send a public job by name; Flower shows the text as length and hash, not content."""
    return app.send_task(task, kwargs=kwargs, kwargsrepr=redacted_kwargs(kwargs), argsrepr="()")


def answer(job: Any, timeout: float) -> dict[str, Any]:
    """The job's answer, or its typed error with every detail (from its error payload)."""
    try:
        return job.get(timeout=timeout)  # type: ignore[no-any-return]
    except QuorumError as e:
        raise (job_error(job) or e) from None


def run_local_job(
    settings: Settings,
    kwargs: dict[str, Any],
    *,
    timeout: float,
    workers: int = 1,
    say: Callable[[str], None] = print,
    task: str = "quorum.extract",
) -> dict[str, Any]:
    """Run one job on this machine: reuse running workers, else start a local stack for it."""
    from workers.local import LocalStack

    url, started = (settings.redis_url, False) if settings.redis_url else embedded.ensure_running()
    app = create_app(settings.model_copy(update={"redis_url": url}))
    try:
        if app.control.ping(timeout=0.5):  # a fleet is already serving this Redis
            return answer(submit(app, task, kwargs), timeout)
        with LocalStack(settings, workers=workers, say=say) as stack:
            stack.wait_for_workers(app)
            return answer(submit(app, task, kwargs), timeout)
    finally:
        app.close()
        if started:  # this command started the embedded server: leave nothing running
            embedded.stop()
