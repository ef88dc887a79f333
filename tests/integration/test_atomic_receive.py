"""workers.atomic_receive on a bare kombu channel against a real Valkey: a message is taken and
recorded as un-acked in one step, and a channel that closes while its wait is answered takes none."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Consumer, Producer, Queue

from workers import app as _app  # noqa: F401 - installs the receive patches, as a worker does


@pytest.fixture
def queue(redis_url: str) -> Iterator[tuple[Queue, redis.Redis]]:
    name = f"atomic-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    yield Queue(name, routing_key=name), client
    client.delete(name)
    client.close()


def _publish(url: str, queue: Queue, body: dict[str, int]) -> None:
    with Connection(url) as conn:
        Producer(conn.channel()).publish(body, routing_key=queue.routing_key, declare=[queue])


def test_a_message_is_taken_and_recorded_as_unacked_in_one_step(redis_url: str, queue) -> None:
    q, client = queue
    got = []
    with Connection(redis_url) as conn:
        channel = conn.channel()
        Consumer(channel, [q], callbacks=[lambda body, message: got.append(message)]).consume()
        _publish(redis_url, q, {"n": 1})
        conn.drain_events(timeout=5)
        assert [m.payload for m in got] == [{"n": 1}]
        tag = got[0].delivery_tag
        assert client.llen(q.name) == 0 and client.hexists("unacked", tag)  # in Redis, as un-acked
        got[0].ack()
        assert not client.hexists("unacked", tag)
        channel.close()


def test_a_channel_closing_while_its_wait_is_answered_leaves_the_message_queued(
    redis_url: str, queue
) -> None:
    q, client = queue
    got = []
    with Connection(redis_url) as conn:
        channel = conn.channel()
        Consumer(channel, [q], callbacks=[lambda body, message: got.append(message)]).consume()
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.2)  # its wait (BLMOVE) is now pending on the server
        _publish(redis_url, q, {"n": 2})
        time.sleep(0.1)  # the server answers that wait; the message stays in the list
        channel.close()
    assert got == []
    assert client.llen(q.name) == 1, "the message left the queue with a closing channel"
