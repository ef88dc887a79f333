"""A failed job's error, readable by every producer, with or without Quorum installed.

Celery's JSON result backend stores a failure as ``{exc_type, exc_module, exc_message: args}``
and rebuilds ``cls(*args)`` — as a stand-in class of the same name in ``celery.exceptions``
when the producer cannot import Quorum. Quorum errors keep ``args == (message,)`` so that
``str(error)`` is the message in both cases; the operator facts (provider, field, status,
retry_after, attempts...) are stored beside the job's result, just before its failure, as an
ordinary result under ``<job_id>:error`` holding :meth:`QuorumError.to_dict` — a plain
``app.AsyncResult(f"{job_id}:error").result`` reads it; :func:`job_error` rebuilds the typed error.
"""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import redis
from celery import states
from celery.result import AsyncResult

from orchestration.errors import QuorumError, RedisUnavailableError, error_from_dict

log = logging.getLogger("quorum.errors")

#: Tasks that run under a job's id: only the public entries (the task that ends a job later
#: publishes under its id through ``workers.publication``, which stores the payload itself).
JOB_TASKS = frozenset({"quorum.extract", "quorum.generate"})
#: Suffix of the result id holding a failed job's error payload.
ERROR_SUFFIX = ":error"

#: What a worker's Redis clients raise once an outage outlasts their retries: redis-py's errors
#: (state, results) and kombu's wrapper of them (sending a task).
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError)


def as_job_error(error: BaseException, job_id: str | None = None) -> QuorumError:
    """The typed error a job ends with when its task raised ``error``: the error itself when it
    is a Quorum error; ``RedisUnavailableError`` when Redis stayed unreachable past the retries;
    else a ``QuorumError`` (``reason="internal"``) naming the original class and message, whose
    traceback the worker logs. The producer's contract is one typed error, whatever went wrong."""
    if isinstance(error, QuorumError):
        return error
    cause = f"{type(error).__module__}.{type(error).__qualname__}: {error}"
    if isinstance(error, REDIS_DOWN):
        message = f"Redis unreachable while the job was under way ({cause})"
        return RedisUnavailableError(message, reason="redis_unreachable", job_id=job_id)
    return QuorumError(f"internal error ({cause})", reason="internal", job_id=job_id)


def error_id(job_id: str) -> str:
    """The result id of ``job_id``'s error payload."""
    return f"{job_id}{ERROR_SUFFIX}"


def store_error(backend: Any, job_id: str, error: BaseException) -> None:
    """Store the error payload of a failing job (best effort: the failure itself matters more)."""
    if not isinstance(error, QuorumError):
        error = QuorumError(f"{type(error).__name__}: {error}")
    try:
        backend.store_result(error_id(job_id), error.to_dict(), states.SUCCESS)
    except Exception:
        log.warning("job %s: could not store its error payload", job_id, exc_info=True)


def error_payload(result: AsyncResult) -> dict[str, Any] | None:
    """The stored error payload of a failed job (``type``, ``message`` and the details)."""
    payload = result.app.AsyncResult(error_id(result.id)).result
    return payload if isinstance(payload, dict) else None


def job_error(result: AsyncResult) -> QuorumError | None:
    """The typed error of a failed job, with every detail (None if it has none stored)."""
    payload = error_payload(result)
    return None if payload is None else error_from_dict(payload)
