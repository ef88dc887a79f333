"""Answer the producer of a public job whose message the worker refuses to decode.

Celery refuses a message whose content type is not accepted (JSON only: a pickled message is
never unpickled) or whose body does not decode (bytes that are not UTF-8, truncated JSON): it
logs the refusal and drops the message, and the producer's ``AsyncResult(job_id).get()`` waits
for an answer that never comes. For the public tasks this consumer also stores
``InvalidRequestError`` under the job id, built from the message headers only (the body is never
decoded), so the producer learns at once what was wrong.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

from orchestration.errors import InvalidRequestError

log = logging.getLogger("quorum.refusals")

#: Tasks a producer sends by name; only their refusals are answered.
PUBLIC_TASKS = frozenset({"quorum.extract", "quorum.generate"})


def refusal(message: Any, exc: BaseException) -> tuple[str, InvalidRequestError] | None:
    """``(job_id, error)`` for a refused public job, from its headers only; None otherwise."""
    headers = getattr(message, "headers", None) or {}
    task, job_id = headers.get("task"), headers.get("id")
    if task not in PUBLIC_TASKS or not isinstance(job_id, str) or not job_id:
        return None
    content_type = getattr(message, "content_type", None)
    if type(exc).__name__ == "ContentDisallowed":
        text = f"{task} accepts JSON only (application/json); content type {content_type!r} refused"
    else:
        text = f"{task}: the message body could not be decoded as {content_type!r} (UTF-8 JSON): {exc}"
    return job_id, InvalidRequestError(text[:500], field="content_type")


class RefusingConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, plus an ``InvalidRequestError`` answer for refused public jobs."""

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        super().on_invalid_task(body, message, exc)
        self._answer(message, exc)

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        super().on_decode_error(message, exc)
        self._answer(message, exc)

    def _answer(self, message: Any, exc: BaseException) -> None:
        refused = refusal(message, exc)
        if refused is None:
            return
        job_id, error = refused
        try:
            self.app.backend.mark_as_failure(job_id, error)
        except Exception:  # the refusal itself stands; only the answer is lost
            log.warning("could not answer refused job %s", job_id, exc_info=True)
