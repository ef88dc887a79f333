"""A task's ack riding in the round trip of its last write (``workers.ack_along``), on a real
Valkey: through the transport on a bare kombu channel (the push and the ack are one script; an
ack left to Celery then sends nothing), the answer's conditional ack (nothing acked while the
answer is not stored: a crash then still redelivers), and failover jobs on real workers, whose
every task message is acked along with its last write."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Producer, Queue

from orchestration.data import load_emails
from orchestration.state.scripts import execute_queued, sha_of
from workers import ack_along, liveness
from workers.liveness import ACK_LUA, OWNER_KEY

TRANSPORT = "workers.transport:Transport"
EMAIL = load_emails()[0]


@pytest.fixture
def queues(redis_url: str) -> Iterator[tuple[Queue, Queue, redis.Redis]]:
    """A queue to consume from, one to send the next hop to, and a client (scripts flushed: a
    script found loaded afterwards ran)."""
    names = [f"along-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    client = redis.Redis.from_url(redis_url)
    client.script_flush()
    yield Queue(names[0], routing_key=names[0]), Queue(names[1], routing_key=names[1]), client
    client.delete(*names)
    client.close()


def _held(conn: Connection, q: Queue, redis_url: str) -> Any:
    """Consume ``q`` on ``conn`` (crash recovery on) and receive one message published to it."""
    got: list[Any] = []
    Consumer(conn.channel(), [q], callbacks=[lambda body, message: got.append(message)]).consume()
    with Connection(redis_url) as producer_conn:
        Producer(producer_conn.channel()).publish({"hop": 0}, routing_key=q.routing_key, declare=[q])
    conn.drain_events(timeout=5)
    assert len(got) == 1
    return got[0]


def _request(message: Any) -> SimpleNamespace:
    return SimpleNamespace(properties={"delivery_tag": message.delivery_tag})


def _script_ran(client: redis.Redis, source: str) -> bool:
    return bool(client.script_exists(sha_of(source))[0])


def test_a_last_send_pushes_the_next_message_and_acks_the_task_in_one_script(redis_url: str, queues) -> None:
    q, nxt, client = queues
    with Connection(redis_url, transport=TRANSPORT) as conn:
        message = _held(conn, q, redis_url)
        tag = message.delivery_tag
        assert client.hexists("unacked", tag)
        with ack_along.sending(_request(message)):
            Producer(conn.default_channel).publish({"hop": 1}, routing_key=nxt.routing_key, declare=[nxt])
        assert client.llen(nxt.name) == 1, "the next hop is queued"
        assert not client.hexists("unacked", tag) and not client.hexists(OWNER_KEY, tag)
        assert client.zscore("unacked_index", tag) is None, "... and the task's message acked with it"
        assert _script_ran(client, ack_along.PUSH_ACK_LUA)
        lv = liveness.holding(tag)
        assert lv is not None and tag in lv.acked_along

        message.ack()  # Celery's ack, after the task returned: nothing left to send
        assert not _script_ran(client, ACK_LUA)
        assert tag not in lv.acked_along and tag not in lv.held
        conn.default_channel.close()


def test_a_send_outside_the_last_send_and_a_second_send_inside_it_are_plain_pushes(
    redis_url: str, queues
) -> None:
    q, nxt, client = queues
    with Connection(redis_url, transport=TRANSPORT) as conn:
        message = _held(conn, q, redis_url)
        producer = Producer(conn.default_channel)
        producer.publish({"hop": 1}, routing_key=nxt.routing_key, declare=[nxt])
        assert client.hexists("unacked", message.delivery_tag), "a send outside `sending` acks nothing"
        with ack_along.sending(_request(message)):
            producer.publish({"hop": 2}, routing_key=nxt.routing_key)
            producer.publish({"hop": 3}, routing_key=nxt.routing_key)
        assert client.llen(nxt.name) == 3
        message.ack()
        assert not client.hexists("unacked", message.delivery_tag)
        conn.default_channel.close()


def test_a_message_another_worker_holds_now_is_not_acked_by_the_send(redis_url: str, queues) -> None:
    """Restored while this worker was frozen and taken by another: the push still goes out (the
    hop is this run's), the other holder's records stay."""
    q, nxt, client = queues
    with Connection(redis_url, transport=TRANSPORT) as conn:
        message = _held(conn, q, redis_url)
        tag = message.delivery_tag
        client.hset(OWNER_KEY, tag, "other@host|host|1|abc")
        with ack_along.sending(_request(message)):
            Producer(conn.default_channel).publish({"hop": 1}, routing_key=nxt.routing_key, declare=[nxt])
        assert client.llen(nxt.name) == 1
        assert client.hexists("unacked", tag) and client.hget(OWNER_KEY, tag) == b"other@host|host|1|abc"
        message.ack()  # as Celery's ack would: the other holder's records are left alone
        assert client.hexists("unacked", tag)
        client.hdel("unacked", tag)
        client.hdel(OWNER_KEY, tag)
        client.zrem("unacked_index", tag)
        conn.default_channel.close()


def test_an_answer_not_stored_leaves_the_message_to_be_redelivered(redis_url: str, queues) -> None:
    q, _, client = queues
    answer = f"celery-task-meta-{uuid.uuid4()}"
    with Connection(redis_url, transport=TRANSPORT) as conn:
        message = _held(conn, q, redis_url)
        tag = message.delivery_tag

        step = ack_along.if_answered(_request(message), answer)
        assert step is not None
        assert execute_queued(client, [step]) == [-1], "no answer stored (a failed store): no ack"
        assert client.hexists("unacked", tag) and client.zscore("unacked_index", tag) is not None

        client.set(answer, '{"status": "SUCCESS"}', ex=60)
        assert execute_queued(client, [step]) == [1]
        assert not client.hexists("unacked", tag) and not client.hexists(OWNER_KEY, tag)
        message.ack()
        assert not _script_ran(client, ACK_LUA)
        client.delete(answer)
        conn.default_channel.close()


def test_a_request_this_process_does_not_hold_rides_nothing() -> None:
    assert ack_along.for_request(SimpleNamespace(properties={"delivery_tag": "never-delivered"})) is None
    assert ack_along.for_request(SimpleNamespace(properties=None)) is None
    assert ack_along.for_request(SimpleNamespace()) is None  # a task called directly


def test_failover_jobs_ack_every_task_message_with_its_last_write(clean, emulator) -> None:
    """One job answered by its first provider, one whose first provider is down: the entry's
    ack rides with the first hop, the failed hop's with the next, the answering hop's with the
    answer. No message is acked on its own, and none is left un-acked."""
    client = redis.Redis.from_url(clean.redis_url)
    client.script_flush()
    first = clean.send(text=EMAIL.text, strategy="failover", providers=["claude", "openai"], use_cache=False)
    assert first.get(timeout=30)["chosen"] == "claude"
    emulator.set_down("claude")
    second = clean.send(text=EMAIL.text, strategy="failover", providers=["claude", "openai"], use_cache=False)
    assert second.get(timeout=30)["chosen"] == "openai"

    assert _script_ran(client, ack_along.PUSH_ACK_LUA) and _script_ran(client, ack_along.ACK_IF_ANSWERED_LUA)
    assert not _script_ran(client, ACK_LUA), "a task message was acked in a round trip of its own"
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0 and client.hlen(OWNER_KEY) == 0
    client.close()
