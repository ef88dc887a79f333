"""Worker-side request classes that keep job texts out of Flower, events, inspection and logs.

Quorum's own producers set ``kwargsrepr``; a foreign producer usually does not, and Celery then
ships ``saferepr(kwargs)`` (the email itself, up to 1024 characters) in the message header,
which the worker copies into its ``task-received`` event. Remote inspection (``scheduled``,
``reserved``, ``active``, which Flower's worker page calls) returns the real arguments.
Every Quorum task answers inspection with representations only, and the public tasks
recompute those representations from the arguments, whatever the producer sent.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.worker.request import Request

from orchestration.errors import QuorumError
from workers.canvas import redacted_kwargs
from workers.job_errors import JOB_TASKS, store_error


class ReprOnlyRequest(Request):
    """Remote inspection sees ``argsrepr``/``kwargsrepr``, never the arguments."""

    def info(self, safe: bool = False) -> dict[str, Any]:
        info = super().info(safe=True)
        info["args"], info["kwargs"] = self.argsrepr, self.kwargsrepr
        return info


class RedactedRequest(ReprOnlyRequest):
    """Public jobs: every long text argument shown as its length and hash, never its content."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        positional = self._args if isinstance(self._args, list | tuple) else ()
        self._argsrepr = f"<{len(positional)} positional args>" if positional else "()"
        self._kwargsrepr = redacted_kwargs(self._kwargs) if isinstance(self._kwargs, dict) else "{}"
        self._request_dict["argsrepr"] = self._argsrepr
        self._request_dict["kwargsrepr"] = self._kwargsrepr


class QuorumTask(Task):
    """Base of every Quorum task: inspection shows representations only, and a job that fails
    with a Quorum error gets its error payload stored beside its result before the failure."""

    Request = "workers.requests:ReprOnlyRequest"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except QuorumError as e:
            if self.name in JOB_TASKS and self.request.id:
                store_error(self.backend, self.request.id, e)
            raise
