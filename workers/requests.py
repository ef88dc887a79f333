"""A worker-side request class that keeps job texts out of Flower, events and logs.

Quorum's own producers set ``kwargsrepr``; a foreign producer usually does not, and Celery
then ships ``saferepr(kwargs)`` (the email itself, up to 1024 characters) in the message
header, which the worker copies into its ``task-received`` event. The public tasks use this
class, which recomputes both representations from the arguments, whatever the producer sent.
"""

from __future__ import annotations

from celery.worker.request import Request

from workers.canvas import redacted_kwargs


class RedactedRequest(Request):
    """Shows each long text argument as its length and hash, never its content."""

    @property
    def argsrepr(self) -> str:
        args = self._args if isinstance(self._args, list | tuple) else ()
        return f"<{len(args)} positional args>" if args else "()"

    @property
    def kwargsrepr(self) -> str:
        return redacted_kwargs(self._kwargs) if isinstance(self._kwargs, dict) else "{}"
