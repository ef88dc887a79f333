"""workers.events: a threads worker's task events go out in batches (one message for several
events, which Celery's event receiver unpacks); worker events are not held back; stopping the
consumer publishes what is buffered."""

from __future__ import annotations

import time
from types import SimpleNamespace

from celery import Celery
from kombu import Queue

from workers import events
from workers.events import BufferTaskEvents


def _fleet() -> tuple[Celery, object, Queue]:
    app = Celery("t", broker="memory://", set_as_current=False)
    conn = app.connection_for_write()
    queue = Queue("monitor", exchange=app.events.Dispatcher(conn, enabled=False).exchange, routing_key="#")
    queue(conn.default_channel).declare()
    return app, conn, queue


def _received(conn: object, queue: Queue) -> list[tuple[str, object]]:
    out = []
    bound = queue(conn.default_channel)  # type: ignore[attr-defined]
    while (message := bound.get(no_ack=True)) is not None:
        out.append((message.delivery_info["routing_key"], message.decode()))
    return out


def test_task_events_of_several_tasks_go_out_as_one_message() -> None:
    app, conn, queue = _fleet()
    dispatcher = app.events.Dispatcher(conn, hostname="w1", enabled=True)
    consumer = SimpleNamespace(app=app, event_dispatcher=dispatcher, hub=None)
    step = BufferTaskEvents(consumer)
    step.start(consumer)
    try:
        for uuid in ("a", "b"):
            dispatcher.send("task-received", uuid=uuid)
            dispatcher.send("task-succeeded", uuid=uuid)
        dispatcher.send("worker-heartbeat")
        heartbeat = _received(conn, queue)
        assert [key for key, _ in heartbeat] == ["worker.heartbeat"]  # at once, unbuffered
        time.sleep(events.FLUSH_AFTER_S * 10)
        batches = _received(conn, queue)
        assert [key for key, _ in batches] == ["task.multi"]
        assert [(e["type"], e["uuid"]) for e in batches[0][1]] == [
            ("task-received", "a"), ("task-succeeded", "a"), ("task-received", "b"), ("task-succeeded", "b"),
        ]  # fmt: skip
        dispatcher.send("task-failed", uuid="c")
    finally:
        step.shutdown(consumer)
    assert [(k, [e["type"] for e in body]) for k, body in _received(conn, queue)] == [
        ("task.multi", ["task-failed"])
    ]  # flushed on shutdown
    assert not dispatcher.buffer_group  # the dispatcher is Celery's again


def test_celerys_own_buffering_is_given_back_when_the_consumer_stops() -> None:
    app, conn, _ = _fleet()
    flush_on_tick = object()
    dispatcher = app.events.Dispatcher(conn, hostname="w1", enabled=True, buffer_group=["task"],
                                       on_send_buffered=flush_on_tick)  # fmt: skip
    consumer = SimpleNamespace(app=app, event_dispatcher=dispatcher, hub=object())
    step = BufferTaskEvents(consumer)
    step.start(consumer)
    assert step.flusher is not None and dispatcher.on_send_buffered == step.flusher.poke
    step.stop(consumer)
    assert dispatcher.on_send_buffered is flush_on_tick and list(dispatcher.buffer_group) == ["task"]


def test_a_jobs_final_event_rides_in_the_workers_batch() -> None:
    app, conn, queue = _fleet()
    dispatcher = app.events.Dispatcher(conn, hostname="w1", enabled=True)
    consumer = SimpleNamespace(app=app, event_dispatcher=dispatcher, hub=None)
    step = BufferTaskEvents(consumer)
    step.start(consumer)
    try:
        dispatcher.send("task-received", uuid="job.h0")
        events.send_job_event(app, "w1", "task-succeeded", "job", result="{}")
        assert _received(conn, queue) == []  # buffered with the worker's own events
        time.sleep(events.FLUSH_AFTER_S * 10)
        batches = _received(conn, queue)
        assert [(e["type"], e["uuid"], e["hostname"]) for e in batches[0][1]] == [
            ("task-received", "job.h0", "w1"), ("task-succeeded", "job", "w1"),
        ]  # fmt: skip
    finally:
        step.shutdown(consumer)
    events.send_job_event(app, "w1", "task-failed", "job2")  # no consumer running: sent at once
    assert [(k, body["type"], body["uuid"]) for k, body in _received(conn, queue)] == [
        ("task.failed", "task-failed", "job2")
    ]
