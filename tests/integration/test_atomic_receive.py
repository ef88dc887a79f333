"""workers.transport on a bare kombu channel against a real Valkey: a message is taken and
recorded as un-acked with its holder in one step, and a channel that closes while its wait is
answered leaves the message queued (what its take got goes straight back)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Consumer, Producer, Queue

from workers.liveness import LIVENESS_KEY, OWNER_KEY

TRANSPORT = "workers.transport:Transport"


@pytest.fixture
def queue(redis_url: str) -> Iterator[tuple[Queue, redis.Redis]]:
    name = f"atomic-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    yield Queue(name, routing_key=name), client
    client.delete(name)
    client.close()


def _publish(url: str, queue: Queue, body: dict[str, int]) -> None:
    with Connection(url) as conn:  # a producer on stock kombu
        Producer(conn.channel()).publish(body, routing_key=queue.routing_key, declare=[queue])


def test_a_message_is_taken_and_recorded_as_unacked_in_one_step(redis_url: str, queue) -> None:
    q, client = queue
    got = []
    with Connection(redis_url, transport=TRANSPORT) as conn:
        channel = conn.channel()
        Consumer(channel, [q], callbacks=[lambda body, message: got.append(message)]).consume()
        _publish(redis_url, q, {"n": 1})
        conn.drain_events(timeout=5)
        assert [m.payload for m in got] == [{"n": 1}]
        tag = got[0].delivery_tag
        assert client.llen(q.name) == 0 and client.hexists("unacked", tag)  # in Redis, as un-acked
        holder = client.hget(OWNER_KEY, tag)  # ... with its holder, which is alive
        assert holder and client.zscore(LIVENESS_KEY, holder) is not None
        got[0].ack()
        assert not client.hexists("unacked", tag) and not client.hexists(OWNER_KEY, tag)
        channel.close()
    assert client.zscore(LIVENESS_KEY, holder) is None, "a clean close holding nothing deregisters"


def test_one_receive_takes_the_waiting_messages_within_the_prefetch_credit(redis_url: str, queue) -> None:
    """Five messages waiting, a credit of three: one receive (one round trip) takes and records
    three, in their order, each un-acked with its holder; the other two stay queued."""
    q, client = queue
    got = []
    for n in range(5):
        _publish(redis_url, q, {"n": n})
    with Connection(redis_url, transport=TRANSPORT) as conn:
        channel = conn.channel()
        consumer = Consumer(channel, [q], callbacks=[lambda body, message: got.append(message)])
        consumer.qos(prefetch_count=3)
        consumer.consume()
        conn.drain_events(timeout=5)  # one wait answered, one take
        assert [m.payload for m in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert client.llen(q.name) == 2
        holders = {client.hget(OWNER_KEY, m.delivery_tag) for m in got}
        assert len(holders) == 1 and None not in holders and client.hlen("unacked") >= 3
        for message in got:
            message.ack()
        conn.drain_events(timeout=5)  # credit back: the other two, in one take
        assert [m.payload["n"] for m in got] == [0, 1, 2, 3, 4] and client.llen(q.name) == 0
        for message in got[3:]:
            message.ack()
        assert not any(client.hexists("unacked", m.delivery_tag) for m in got)
        channel.close()


def test_a_receive_still_takes_its_message_after_redis_lost_its_scripts(redis_url: str, queue) -> None:
    """The take is sent behind the wait as ``EVALSHA``; a Redis that forgot the script (restarted,
    ``SCRIPT FLUSH``) answers ``NOSCRIPT`` and the take runs again, loading it."""
    q, client = queue
    got = []
    with Connection(redis_url, transport=TRANSPORT) as conn:
        channel = conn.channel()
        Consumer(channel, [q], callbacks=[lambda body, message: got.append(message)]).consume()
        _publish(redis_url, q, {"n": 1})
        conn.drain_events(timeout=5)
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.2)  # the next wait (and its take) is pending
        client.script_flush()
        _publish(redis_url, q, {"n": 2})
        conn.drain_events(timeout=5)
        assert [m.payload for m in got] == [{"n": 1}, {"n": 2}]
        assert client.llen(q.name) == 0 and client.hget(OWNER_KEY, got[1].delivery_tag)
        for message in got:
            message.ack()
        channel.close()


def test_a_channel_closing_while_its_wait_is_answered_leaves_the_message_queued(
    redis_url: str, queue
) -> None:
    q, client = queue
    got = []
    with Connection(redis_url, transport=TRANSPORT) as conn:
        channel = conn.channel()
        Consumer(channel, [q], callbacks=[lambda body, message: got.append(message)]).consume()
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.2)  # its wait (BLMOVE) is now pending on the server
        _publish(redis_url, q, {"n": 2})
        time.sleep(0.1)  # the server answers that wait; the message stays in the list
        channel.close()
    assert got == []
    assert client.llen(q.name) == 1, "the message left the queue with a closing channel"


def test_a_restored_message_goes_back_to_its_queue_whatever_its_routing_fields_say(
    redis_url: str, queue
) -> None:
    """A sender writes a message's ``delivery_info``: a restore must not push it onto the list that
    names (a Quorum state key here), only back onto the queue it was taken from."""
    q, client = queue
    target = f"quorum:{{openai}}:health:latency-{uuid.uuid4().hex[:6]}"
    _publish(redis_url, q, {"n": 3})
    raw = json.loads(client.rpop(q.name))
    raw["properties"]["delivery_info"] = {"exchange": "", "routing_key": target}
    client.lpush(q.name, json.dumps(raw))
    got = []
    with Connection(redis_url, transport=TRANSPORT) as conn:
        channel = conn.channel()
        Consumer(channel, [q], callbacks=[lambda body, message: got.append(message)]).consume()
        conn.drain_events(timeout=5)
        assert [m.payload for m in got] == [{"n": 3}]
        channel.close()  # not acked: handed back
    try:
        assert client.llen(q.name) == 1, "the message was not handed back to its queue"
        assert not client.exists(target), "the restore followed the sender's routing fields"
    finally:
        client.delete(target)


# --------------------------------------------------------------------------- liveness


def _hold_as(client: redis.Redis, q: Queue, holder: str, body: dict[str, int]) -> str:
    """A message taken by ``holder`` and never acked: queued, then moved to un-acked as its receive
    script would (kombu's JSON, the un-acked hash and index, the holder)."""
    tag = uuid.uuid4().hex
    raw = {
        "body": json.dumps(body), "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {}, "properties": {
            "delivery_tag": tag, "body_encoding": "utf-8", "delivery_mode": 2, "priority": 0,
            "delivery_info": {"exchange": q.exchange.name, "routing_key": q.routing_key},
        },
    }  # fmt: skip
    sec, usec = client.time()
    client.zadd("unacked_index", {tag: sec + usec / 1e6})
    client.hset("unacked", tag, json.dumps([raw, q.exchange.name, q.routing_key]))
    client.hset(OWNER_KEY, tag, holder)
    return tag


def _declare(url: str, q: Queue) -> None:
    with Connection(url) as conn:
        q(conn.channel()).declare()


def _consume(conn: Connection, q: Queue, got: list) -> None:
    Consumer(conn.channel(), [q], callbacks=[lambda body, message: got.append(message)]).consume()


def _drain_until(conn: Connection, got: list, until: float) -> None:
    while not got and time.monotonic() < until:
        with contextlib.suppress(socket.timeout):
            conn.drain_events(timeout=0.2)


def test_a_lapsed_holders_message_is_restored_once_by_a_live_consumer(redis_url: str, queue) -> None:
    q, client = queue
    _declare(redis_url, q)
    ghost = f"ghost@nowhere|nowhere|1|{uuid.uuid4().hex[:12]}"
    sec, _ = client.time()
    client.zadd(LIVENESS_KEY, {ghost: sec - 100})  # last refreshed 100 s ago: dead
    tag = _hold_as(client, q, ghost, {"n": 3})
    got: list = []
    options = {"liveness_window": 1.0, "visibility_timeout": 3600}
    with Connection(redis_url, transport=TRANSPORT, transport_options=options) as conn:
        _consume(conn, q, got)
        _drain_until(conn, got, time.monotonic() + 10)
        assert [m.delivery_tag for m in got] == [tag]
        assert got[0].delivery_info["redelivered"]
        assert client.zscore(LIVENESS_KEY, ghost) is None, "the dead holder stays registered"
        me = client.hget(OWNER_KEY, tag)
        assert me and me.decode() != ghost
        got[0].ack()
    assert client.llen(q.name) == 0 and not client.hexists("unacked", tag)


def test_a_live_holders_message_is_never_handed_back_by_the_visibility_timeout(redis_url: str, queue) -> None:
    q, client = queue
    _declare(redis_url, q)
    busy = f"busy@elsewhere|elsewhere|1|{uuid.uuid4().hex[:12]}"
    tag = _hold_as(client, q, busy, {"n": 4})
    client.zadd("unacked_index", {tag: 1})  # received long ago: far past any visibility timeout
    got: list = []
    options = {"liveness_window": 2.0, "visibility_timeout": 1, "unacked_restore_throttle": 1}
    with Connection(redis_url, transport=TRANSPORT, transport_options=options) as conn:
        _consume(conn, q, got)
        until = time.monotonic() + 4  # two windows, many visibility sweeps
        while time.monotonic() < until:
            sec, usec = client.time()
            client.zadd(LIVENESS_KEY, {busy: sec + usec / 1e6})  # the holder refreshes: alive
            with contextlib.suppress(socket.timeout):
                conn.drain_events(timeout=0.2)
        assert got == [] and client.hget(OWNER_KEY, tag).decode() == busy
        _drain_until(conn, got, time.monotonic() + 10)  # the holder stops refreshing: it is dead
        assert [m.delivery_tag for m in got] == [tag]
        got[0].ack()


def test_a_restarted_node_hands_back_its_previous_runs_messages_at_once(redis_url: str, queue) -> None:
    q, client = queue
    _declare(redis_url, q)
    name, host = f"node-{uuid.uuid4().hex[:6]}@here", socket.gethostname()
    dead_pid = _dead_pid()
    before = f"{name}|{host}|{dead_pid}|{uuid.uuid4().hex[:12]}"
    sec, _ = client.time()
    client.zadd(LIVENESS_KEY, {before: sec})  # refreshed just now: not lapsed, but its process is gone
    tag = _hold_as(client, q, before, {"n": 5})
    got: list = []
    options = {"liveness_window": 300.0, "consumer_name": name}  # no lapse can explain a restore
    with Connection(redis_url, transport=TRANSPORT, transport_options=options) as conn:
        _consume(conn, q, got)
        _drain_until(conn, got, time.monotonic() + 5)
        assert [m.delivery_tag for m in got] == [tag]
        got[0].ack()
    assert client.zscore(LIVENESS_KEY, before) is None


def test_a_message_recorded_for_a_live_consumer_that_never_got_it_comes_back(redis_url: str, queue) -> None:
    """A receive script that ran as the connection dropped: Redis says this live consumer holds
    the message, the consumer never saw the reply. Its own refreshes hand it back (on the second
    refresh that finds it unknown), long before the visibility timeout; nobody sweeps it."""
    q, client = queue
    _declare(redis_url, q)
    got: list = []
    options = {"liveness_window": 1.0, "visibility_timeout": 3600}
    with Connection(redis_url, transport=TRANSPORT, transport_options=options) as conn:
        channel = conn.channel()
        Consumer(channel, [q], callbacks=[lambda body, message: got.append(message)]).consume()
        me = channel._liveness.me.member
        tag = _hold_as(client, q, me, {"n": 6})  # recorded for this consumer; its reply "lost"
        _drain_until(conn, got, time.monotonic() + 10)
        assert [m.delivery_tag for m in got] == [tag], "the stranded message was not handed back"
        assert got[0].delivery_info["redelivered"]
        assert client.hget(OWNER_KEY, tag).decode() == me, "taken again, by its one live consumer"
        got[0].ack()
        _drain_until(conn, [], time.monotonic() + 1.5)  # refreshes for 1.5 s: nothing more comes
        assert len(got) == 1, "handed back more than once"
    assert client.llen(q.name) == 0 and not client.hexists("unacked", tag)


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_producer_in_the_same_process_keeps_stock_kombu(redis_url: str) -> None:
    from kombu.transport import redis as kombu_redis

    from workers import app as _app
    from workers import transport

    with Connection(redis_url) as conn:
        assert type(conn.transport) is kombu_redis.Transport
        assert type(conn.channel()) is kombu_redis.Channel
    assert kombu_redis.Channel._brpop_start is not transport.Channel._brpop_start
    assert _app.app.connection_for_read().transport_cls == "workers.transport:Transport"


def test_a_channel_publishes_and_acks_through_one_client_per_pool(redis_url: str, queue) -> None:
    """kombu built a client object for every publish and ack; the channel keeps one per pool,
    builds a new one when its pool is replaced, and messages still go and come as before."""
    q, client = queue
    got = []
    with Connection(redis_url, transport=TRANSPORT) as conn:
        channel = conn.channel()
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second and first.connection_pool is channel.pool
        with channel.conn_or_acquire(client) as given:
            assert given is client  # a caller's own client is used as given
        Consumer(channel, [q], callbacks=[lambda body, message: got.append(message)]).consume()
        producer = Producer(channel)
        for n in range(3):
            producer.publish({"n": n}, routing_key=q.routing_key, declare=[q])
        while len(got) < 3:
            conn.drain_events(timeout=5)
        for message in got:
            message.ack()
        assert [m.payload for m in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert not any(client.hexists("unacked", m.delivery_tag) for m in got)
        old = first
        channel._disconnect_pools()  # as kombu does on a lost connection
        with channel.conn_or_acquire() as fresh:
            assert fresh is not old and fresh.connection_pool is channel.pool
            assert fresh.ping()
        channel.close()
