"""Worker-side request classes that keep job texts out of Flower, events, inspection and logs.

Quorum's own producers set ``kwargsrepr``; a foreign producer usually does not, and Celery then
ships ``saferepr(kwargs)`` (the email itself, up to 1024 characters) in the message header,
which the worker copies into its ``task-received`` event. Remote inspection (``scheduled``,
``reserved``, ``active``, which Flower's worker page calls) returns the real arguments.
Every Quorum task answers inspection with representations only, and the public tasks
recompute those representations from the arguments, whatever the producer sent.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

from celery import Task
from celery.exceptions import Ignore, TaskPredicate
from celery.worker.request import Request

from orchestration.errors import QuorumError
from workers import tracing
from workers.canvas import redacted_kwargs
from workers.job_errors import JOB_TASKS, as_job_error, store_error
from workers.signing import MAC_FIELD, valid, worker_key

log = logging.getLogger("quorum.signing")


#: How long a task's message counts as unsettled after its task started or asked for its ack (s);
#: past that, its worker's liveness thread treats it as any message held without a task.
UNSETTLED_MAX_S = 60.0

#: Messages of Quorum tasks that started and are not acked or rejected yet: tag -> (message, since).
_unsettled: dict[str, tuple[Any, float]] = {}


class SettledRequest(Request):
    """A request whose message counts as unsettled from its task's start until it is acked.

    Celery forgets a finished task (``task_ready``) before it acks it, and with the event loop
    the ack itself only runs later in the consumer's thread (``call_soon_ack``): a channel closed
    on a reconnect in between used to hand back a task that had already run.
    """

    def on_accepted(self, pid: Any, time_accepted: float) -> None:
        self._unsettled()
        super().on_accepted(pid, time_accepted)

    def acknowledge(self) -> None:
        self._unsettled()  # its ack may wait for the event loop: from now, not from its start
        super().acknowledge()

    def reject(self, requeue: bool = False) -> None:
        self._unsettled()
        super().reject(requeue=requeue)

    def _unsettled(self) -> None:
        if self.message is not None:
            _unsettled[self.message.delivery_tag] = (self.message, monotonic())


def unsettled_tags(now: float | None = None) -> set[str]:
    """Delivery tags of tasks that started and whose message is not acked or rejected yet
    (for at most ``UNSETTLED_MAX_S``); forgets the settled ones."""
    now = monotonic() if now is None else now
    for tag, (message, since) in list(_unsettled.items()):
        if message.acknowledged or now - since > UNSETTLED_MAX_S:
            _unsettled.pop(tag, None)
    return set(_unsettled)


class ReprOnlyRequest(SettledRequest):
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


def hostname_of(task: Task) -> str | None:
    """The worker's name for a task's events: its request's, or, for a chord body or an errback
    Celery runs inline (no request of its own), that of the worker task it runs inside."""
    if task.request.hostname:
        return str(task.request.hostname)
    outer = task.app.current_worker_task
    return getattr(getattr(outer, "request", None), "hostname", None)


class QuorumTask(Task):
    """Base of every Quorum task: inspection shows representations only, and a job that fails
    gets its error payload stored beside its result before the failure. A job's entry task ends
    with a typed error whatever it raised (``as_job_error``): anything else would reach the
    producer as a raw ``AttributeError`` or ``OperationalError`` (the job contract says one
    ``QuorumError``); the original and its traceback go to the worker log."""

    Request = "workers.requests:ReprOnlyRequest"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except QuorumError as e:
            if self.name in JOB_TASKS and self.request.id:
                store_error(self.backend, self.request.id, e)
            raise
        except TaskPredicate:  # Ignore, Reject, Retry: Celery's control flow, not a failure
            raise
        except Exception as e:
            job_id = self.request.id
            if self.name not in JOB_TASKS or not job_id:
                raise
            error = as_job_error(e, job_id)
            log.error("job %s: %s failed with %s: %s", job_id, self.name, type(e).__name__, e, exc_info=True)
            store_error(self.backend, job_id, error)
            raise error from e


class InternalTask(QuorumTask):
    """Base of the tasks only workers send: the MAC is checked before the body runs.

    A message without a valid MAC is logged and acknowledged (``Ignore``: no result, no event,
    no callback, no chord step); an errback Celery calls inline with a bad MAC returns at once.
    """

    #: The MAC rides in the kwargs: the sender must not check them against the task's parameters.
    typing = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = None if self.request.called_directly else self.request.id
        if not valid(worker_key(self.app), self.name, task_id, kwargs):
            log.error("refused %s[%s]: missing or wrong MAC (not run, nothing stored)", self.name, task_id)
            if self.request.called_directly:
                return None
            raise Ignore()
        kwargs.pop(MAC_FIELD)
        if self.request.called_directly:  # an errback Celery runs inline
            with tracing.inline(self.name, str(kwargs.get("job_id", ""))):
                return super().__call__(*args, **kwargs)
        return self.run(*args, **kwargs)  # the tracer has pushed this message's request already
