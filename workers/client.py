"""Producer side: send jobs by name and wait for them, as any upstream producer would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from orchestration.config import Settings
from workers import embedded
from workers.app import create_app
from workers.canvas import redacted_kwargs


def submit(app: Celery, task: str, kwargs: dict[str, Any]) -> Any:
    """Send a public job by name; Flower shows the text as length and hash, not content."""
    return app.send_task(task, kwargs=kwargs, kwargsrepr=redacted_kwargs(kwargs), argsrepr="()")


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
            return submit(app, task, kwargs).get(timeout=timeout)
        with LocalStack(settings, workers=workers, say=say) as stack:
            stack.wait_for_workers(app)
            return submit(app, task, kwargs).get(timeout=timeout)
    finally:
        app.close()
        if started:  # this command started the embedded server: leave nothing running
            embedded.stop()
