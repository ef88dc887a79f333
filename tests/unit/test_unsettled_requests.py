"""workers.requests / workers.app: a task that ran counts as running until its message is acked.

Celery forgets a finished task (``task_ready``) before it acks the message, and with the event loop
the ack only runs later in the consumer's thread; a channel closing in that gap (a reconnect) used
to hand the message back, and the task ran again.
Real Celery requests on a real (in-memory) kombu channel.
"""

from __future__ import annotations

import json
import logging
import uuid
from time import monotonic

from celery.worker import state as worker_state
from kombu import Connection, Message

import workers.tasks  # noqa: F401  (registers quorum.call)
from workers.app import app, running_delivery_tags
from workers.requests import UNSETTLED_MAX_S, ReprOnlyRequest, unsettled_tags


def _request(on_ack) -> tuple[ReprOnlyRequest, str]:
    tag, task_id = uuid.uuid4().hex, uuid.uuid4().hex
    body = json.dumps([[], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    message = Message(
        body=body, delivery_tag=tag, content_type="application/json", content_encoding="utf-8",
        headers={"task": "quorum.call", "id": task_id, "lang": "py", "argsrepr": "()", "kwargsrepr": "{}"},
        properties={"delivery_tag": tag}, channel=Connection("memory://").channel(),
    )  # fmt: skip
    request = ReprOnlyRequest(message, app=app, task=app.tasks["quorum.call"], on_ack=on_ack)
    return request, tag


def test_a_finished_task_counts_as_running_until_its_deferred_ack_has_run() -> None:
    deferred: list = []  # Celery's call_soon_ack with the event loop: the ack runs later, elsewhere
    request, tag = _request(lambda logger, errors: deferred.append(request.message.ack_log_error))
    worker_state.task_reserved(request)
    request.on_accepted(pid=None, time_accepted=monotonic())
    assert tag in running_delivery_tags()
    request.on_success((False, None, 0.0))  # task_ready (Celery forgets it), then the ack, deferred
    assert request.acknowledged and deferred
    assert tag in running_delivery_tags(), "forgotten before its ack ran: a close would hand it back"
    deferred.pop()(logging.getLogger(__name__), ())
    assert tag not in running_delivery_tags() and tag not in unsettled_tags()


def test_an_ack_that_never_comes_is_forgotten_in_time() -> None:
    request, tag = _request(lambda logger, errors: None)  # the ack is lost with its event loop
    request.on_accepted(pid=None, time_accepted=monotonic())
    request.on_success((False, None, 0.0))
    assert tag in unsettled_tags()
    assert tag not in unsettled_tags(now=monotonic() + UNSETTLED_MAX_S + 1)  # then handed back


def test_a_request_dropped_before_it_started_is_not_running() -> None:
    request, tag = _request(lambda logger, errors: None)
    worker_state.task_reserved(request)
    worker_state.reserved_requests.discard(request)  # what Celery's on_close does to it
    worker_state.requests.pop(request.id, None)
    assert tag not in running_delivery_tags()
