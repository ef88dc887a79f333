"""``FlatChord`` sends a chord of plain signatures without Celery's canvas machinery: its
messages and its chord size must be exactly those Celery's ``chord.apply_async`` produces for
the same header and body (in a worker and in a producer), so a Celery upgrade that changes what
a chord sends fails here; anything it does not handle goes through Celery's own path."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, chord
from celery._state import _set_task_join_will_block, _task_stack, task_join_will_block
from redis.connection import Connection

from orchestration.config import Settings
from workers import app as app_module
from workers.canvas import FlatChord, consensus_chord
from workers.transport import Channel, Transport

KEY = b"k" * 32
CALLS = [(0, "claude:claude-sonnet-4-6"), (1, "openai:gpt-4.1-mini"), (2, "gemini:gemini-2.5-flash")]


def _noop(self: Any, **kwargs: Any) -> None:
    """Stands for a task in this app's registry (only its options matter here)."""


@pytest.fixture
def app(valkey_url: str) -> Celery:
    app = app_module.create_app(Settings(redis_url=valkey_url))
    for name in ("quorum.extract", "quorum.call", "quorum.merge"):  # registered, as in a worker
        app.task(name=name, bind=True, time_limit=600, shared=False)(_noop)  # this app only
    app.backend.client.flushall()
    return app


@pytest.fixture
def in_a_worker(app: Celery) -> Iterator[None]:
    """As in the entry task: joins refused, ``quorum.extract`` of job ``job1`` running."""
    entry = app.tasks["quorum.extract"]
    entry.push_request(id="job1", root_id="job1", called_directly=False)
    _task_stack.push(entry)
    was = task_join_will_block()
    _set_task_join_will_block(True)
    try:
        yield
    finally:
        _set_task_join_will_block(was)
        _task_stack.pop()
        entry.pop_request()


def _sent(app: Celery, send: Any) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """The messages ``send()`` queued (oldest first, body decoded, group id and delivery tag
    replaced by placeholders) and the chord keys it wrote (group id replaced)."""
    client = app.backend.client
    client.flushall()
    send()
    (size_key,) = client.keys("celery-taskset-meta-*")
    group_id = size_key.decode().removeprefix("celery-taskset-meta-").removesuffix(".s")
    messages = []
    for raw in reversed(client.lrange("quorum", 0, -1)):
        text = raw.decode().replace(group_id, "<group>")
        message = json.loads(text)
        message["body"] = json.loads(base64.b64decode(message["body"]).decode().replace(group_id, "<group>"))
        message["properties"]["delivery_tag"] = "<tag>"
        messages.append(message)
    return messages, {"size": client.get(size_key)}


def _both(app: Celery) -> tuple[Any, Any]:
    def celerys() -> None:
        flat = consensus_chord(app, KEY, "job1", CALLS, [], closed_at={0: 1.0, 1: None, 2: 2.0})
        chord(flat.tasks, flat.body).apply_async()

    def flat() -> None:
        consensus_chord(app, KEY, "job1", CALLS, [], closed_at={0: 1.0, 1: None, 2: 2.0}).apply_async()

    return _sent(app, celerys), _sent(app, flat)


def test_a_flat_chord_sends_what_celerys_chord_sends_in_a_worker(app: Celery, in_a_worker: None) -> None:
    (celery_msgs, celery_keys), (flat_msgs, flat_keys) = _both(app)
    assert flat_msgs == celery_msgs
    assert flat_keys == celery_keys == {"size": b"3"}
    headers = [m["headers"] for m in flat_msgs]
    assert [h["id"] for h in headers] == ["job1.c0", "job1.c1", "job1.c2"]
    assert [h["group_index"] for h in headers] == [0, 1, 2]
    assert {h["group"] for h in headers} == {"<group>"}
    assert {(h["root_id"], h["parent_id"]) for h in headers} == {("job1", "job1")}
    body = flat_msgs[0]["body"][2]["chord"]
    assert (body["task"], body["options"]["task_id"], body["subtask_type"]) == (
        "quorum.merge",
        "job1.m",
        "quorum_inline",
    )
    assert not app.backend.result_consumer.subscribed_to  # a worker waits on no header result


def test_a_flat_chord_sends_what_celerys_chord_sends_from_a_producer(app: Celery) -> None:
    (celery_msgs, celery_keys), (flat_msgs, flat_keys) = _both(app)
    assert flat_msgs == celery_msgs and flat_keys == celery_keys
    assert [m["headers"]["root_id"] for m in flat_msgs] == ["job1.c0", "job1.c1", "job1.c2"]
    app.backend.result_consumer.cancel_for("job1.m")


def test_what_a_flat_chord_does_not_handle_goes_through_celery(app: Celery, in_a_worker: None) -> None:
    """Options (here a countdown) are Celery's to apply: none is dropped by the flat path."""
    sig = consensus_chord(app, KEY, "job1", CALLS, [])
    assert isinstance(sig, FlatChord)
    messages, keys = _sent(app, lambda: sig.apply_async(countdown=30))
    assert keys == {"size": b"3"}
    assert [m["headers"]["eta"] is not None for m in messages] == [True, True, True]


class _CountingConnection(Connection):
    """A broker connection that counts its writes: one write of packed commands is one round trip."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).writes += 1
        super().send_packed_command(command, check_health)


class _CountingChannel(Channel):
    connection_class = _CountingConnection


class CountingTransport(Transport):
    """Quorum's transport on counting connections (this test's own, named by the app's config)."""

    Channel = _CountingChannel


def test_a_flat_chords_header_and_its_sent_events_go_out_in_one_round_trip(app: Celery) -> None:
    """Sent from a producer, the header's messages and their ``task-sent`` events are one
    pipelined write (kombu's publish batch), not six; every message still arrives, in order. (A
    worker sends no ``task-sent`` events: its batch is the three messages.)"""
    app.conf.broker_transport = f"{__name__}:CountingTransport"
    consensus_chord(app, KEY, "job0", CALLS, []).apply_async()  # connects and declares the queue
    app.backend.result_consumer.cancel_for("job0.m")
    sig = consensus_chord(app, KEY, "job1", CALLS, [])
    _CountingConnection.writes = 0
    messages, keys = _sent(app, sig.apply_async)
    assert _CountingConnection.writes == 1
    assert keys == {"size": b"3"}
    assert [m["headers"]["id"] for m in messages] == ["job1.c0", "job1.c1", "job1.c2"]
    app.backend.result_consumer.cancel_for("job1.m")


class _NoPipelineConnection(Connection):
    """A broker connection that loses every write packed in more than one chunk (as a Redis going
    away mid-write would): a chord's batch (six commands, ~7.5 kB) fails, a lone message's LPUSH
    or event's PUBLISH (one chunk under redis-py's 6 kB packing cutoff) goes through."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if isinstance(command, list) and len(command) > 1:
            raise redis.ConnectionError("lost mid-write (test)")
        super().send_packed_command(command, check_health)


class _NoPipelineChannel(Channel):
    connection_class = _NoPipelineConnection


class NoPipelineTransport(Transport):
    """Quorum's transport on connections that lose pipelined writes (this test's own)."""

    Channel = _NoPipelineChannel


def test_a_header_whose_batch_failed_is_sent_again_message_by_message(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    app.conf.broker_transport = f"{__name__}:NoPipelineTransport"
    sig = consensus_chord(app, KEY, "job1", CALLS, [])
    messages, keys = _sent(app, sig.apply_async)
    assert [m["headers"]["id"] for m in messages] == ["job1.c0", "job1.c1", "job1.c2"]
    assert {m["headers"]["group"] for m in messages} == {"<group>"}  # one group, as sent first
    assert keys == {"size": b"3"}
    assert "sending its messages one by one" in caplog.text
    app.backend.result_consumer.cancel_for("job1.m")
