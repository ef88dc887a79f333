"""Quorum's kombu transport: kombu's Redis transport, with receive, crash recovery and sends made safe.

Selected with ``broker_transport = "workers.transport:Transport"`` (``workers.app`` does), the way
kombu's Sentinel transport extends the Redis one; kombu's own classes are left as they are, so a
producer or any other app in the same process keeps stock kombu. Four changes:

- **Atomic receive.** kombu receives with ``BRPOP``, which takes the message out of Redis, and
  records it as un-acked in a second round trip: a worker killed in between loses the message
  for good (celery/celery#7950, celery/kombu#305). A channel consuming one queue with acks here
  waits with ``BLMOVE q q RIGHT RIGHT`` (the message stays where it is), then one Lua script pops
  it and records it as un-acked *with its holder*. The script is sent right behind the wait, on
  the same connection, so the server runs it the moment the wait ends: one round trip per
  receive, as kombu's ``BRPOP``, not two. And one receive takes every waiting message up to
  ``receive_batch`` (default 8) within the prefetch credit: under load, messages no longer
  queue behind the event loop's one round trip each. A channel consuming several queues keeps
  kombu's ``BRPOP`` (``BLMOVE`` watches one list) and records the holder with the un-acked entry.
- **Crash recovery by liveness** (``workers.liveness``): live workers hand back the messages of a
  worker whose liveness record lapsed, within seconds, and each hands back what Redis says it
  holds but it never got (a receive whose reply was lost); the visibility timeout is a fallback
  only and never hands back a message whose holder is alive, however long its task runs.
- **Closing on a broker gone**: a connection error while draining the pending wait does not
  abort ``close()`` (kombu 5.7 then left the channel half open and the worker exited on the
  second close instead of reconnecting when Redis restarted).
- **Sending rides out a restart**: kombu's publish retry (``Connection.ensure``, which a worker's
  ``task_publish_retry_policy`` drives) recovers only from the errors the transport calls
  recoverable, and a Redis restart raised two others, each ending the send at once (a job being
  started during the outage then failed with that raw error). ``Producer._publish`` takes its
  channel, then declares the queue under a retry of its own, which on a lost connection closes
  that channel, reconnects and declares on a new one; the publish then went out on the closed
  channel: ``AttributeError: 'NoneType' object has no attribute 'client'`` from kombu's client
  set-up. Here a closed channel raises a connection error instead, so the publish's retry
  reconnects and publishes on a live channel. And a producer whose channel is made on first use
  (the producer pool's) raised kombu's own ``OperationalError`` once connecting took longer than
  the connect timeout; it counts as recoverable here (kombu calls it "recoverable connection
  error", Celery retries it for the callbacks it sends).

One cost is cut too: kombu builds a new redis-py client object (~60 µs: redis-py copies its
reply-callback table) for every publish, ack and task-event batch; a channel here builds one per
connection pool and reuses it (redis-py clients are thread-safe; each command still takes a
connection from the pool).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.exceptions import OperationalError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.imports import symbol_by_name
from kombu.utils.json import dumps, loads
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from orchestration.errors import ConfigError
from workers import ack_along, liveness
from workers.liveness import LIVENESS_KEY, OWNER_KEY

logger = logging.getLogger(__name__)

#: KEYS: the queue's lists in priority order, then the un-acked index, the un-acked hash, the
#: holders and the liveness set. ARGV: the holder, how many messages to take at most. Pops up to
#: that many messages, in priority order, and records each as kombu's ``QoS.append`` would, with
#: its holder, in one step. The record names the queue the message was taken from (anonymous
#: exchange, routing key = the queue), never the routing fields the sender wrote in the message: a
#: restore puts it back where it was. Replies ``{list, message, recorded}`` for each message taken
#: (one flat list); ``recorded`` is "0" for a message without a delivery tag (not kombu's JSON):
#: kombu then handles it as it always has.
RECEIVE_LUA = """
local lists = #KEYS - 4
local want = tonumber(ARGV[2]) or 1
local out, now = {}, nil
for i = 1, lists do
  while #out < 3 * want do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    local ok, msg = pcall(cjson.decode, item)
    local props = ok and type(msg) == 'table' and msg['properties']
    local tag = type(props) == 'table' and props['delivery_tag']
    if type(tag) ~= 'string' then
      out[#out + 1], out[#out + 2], out[#out + 3] = KEYS[i], item, '0'
    else
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) + tonumber(t[2]) / 1000000
        redis.call('ZADD', KEYS[lists + 4], now, ARGV[1])
      end
      redis.call('ZADD', KEYS[lists + 1], now, tag)
      redis.call('HSET', KEYS[lists + 2], tag, '[' .. item .. ',"",' .. cjson.encode(KEYS[1]) .. ']')
      redis.call('HSET', KEYS[lists + 3], tag, ARGV[1])
      out[#out + 1], out[#out + 2], out[#out + 3] = KEYS[i], item, '1'
    end
  end
end
if #out == 0 then return false end
return out
"""

#: How many waiting messages one receive takes at most (transport option ``receive_batch``),
#: within the channel's prefetch credit: under load a worker's event loop takes what is queued
#: in one round trip instead of one round trip per message (each of which a message waited for).
DEFAULT_RECEIVE_BATCH = 8


def _holder_alive(pipe: Any, holder: str, window: float) -> bool:
    """Whether ``holder`` refreshed its liveness within ``window`` (server time)."""
    score = pipe.zscore(LIVENESS_KEY, holder)
    if score is None:
        return False
    sec, usec = pipe.time()
    return bool(sec + usec / 1e6 - float(score) < window)


class QoS(kombu_redis.QoS):
    """kombu's un-acked records, plus who holds each message; acks survive a reconnect."""

    def _liveness(self) -> liveness.Liveness | None:
        return self.channel._liveness  # type: ignore[no-any-return]

    def append(self, message: Any, delivery_tag: str) -> None:
        """Record the message as un-acked with its holder (unless the receive script did)."""
        lv, recorded = self._liveness(), self.channel._recorded
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)  # in memory only: Redis has it
            return
        if lv is None:
            super().append(message, delivery_tag)
            return
        with lv.receiving(), self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time()}).hset(
                self.unacked_key, delivery_tag, dumps([message._raw, "", self._source_queue(message)])
            ).hset(OWNER_KEY, delivery_tag, lv.me.member).execute()
            lv.held.add(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)

    def _source_queue(self, message: Any) -> str:
        """Where a message taken by kombu's BRPOP goes back: the consumed queue its routing key
        names, else the first consumed queue (never a list the sender chose)."""
        queues = list(self.channel.active_queues)
        routing_key = message.delivery_info.get("routing_key")
        return routing_key if routing_key in queues else queues[0]

    def ack(self, delivery_tag: str) -> None:
        """kombu's ack through this process's own client, unless another worker holds it now, or
        the task acked it with its last write (``workers.ack_along``: nothing left to send)."""
        lv = self._liveness()
        if lv is None:
            super().ack(delivery_tag)
            return
        if delivery_tag in lv.acked_along:
            lv.acked_along.discard(delivery_tag)
        else:
            lv.ack_script(
                keys=[self.unacked_index_key, self.unacked_key, OWNER_KEY],
                args=[delivery_tag, lv.me.member],
                client=lv.client,
            )
        lv.held.discard(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """kombu's reject, through this process's own client (see ``ack``)."""
        lv = self._liveness()
        if lv is None:
            super().reject(delivery_tag, requeue=requeue)
            return
        if delivery_tag in lv.acked_along:  # acked with its task's last write: nothing to hand back
            self.ack(delivery_tag)
            return
        if requeue:
            self.restore_by_tag(delivery_tag, client=lv.client, leftmost=True)
            lv.held.discard(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
        else:
            self.ack(delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        with self.pipe_or_acquire(pipe) as pipe:
            return (
                pipe.zrem(self.unacked_index_key, delivery_tag)
                .hdel(self.unacked_key, delivery_tag)
                .hdel(OWNER_KEY, delivery_tag)
            )

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        """kombu's restore, except of a message whose holder is another live worker."""
        lv = self._liveness()
        me = lv.me.member if lv is not None else None
        window = self.channel.liveness_window

        def restore_transaction(pipe: Any) -> None:
            p = pipe.hget(self.unacked_key, tag)
            owner = pipe.hget(OWNER_KEY, tag)
            live = owner is not None and bytes_to_str(owner) != me
            live = live and _holder_alive(pipe, bytes_to_str(owner), window)
            pipe.multi()
            if live:
                return  # a live worker runs it: never hand back live work, however long it runs
            self._remove_from_indices(tag, pipe)
            if p:
                M, EX, RK = loads(bytes_to_str(p))
                self.channel._do_restore_message(M, EX, RK, pipe, leftmost)

        with self.channel.conn_or_acquire(client) as client:
            client.transaction(restore_transaction, self.unacked_key, OWNER_KEY)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel with the atomic receive, holders and liveness (see the module)."""

    QoS = QoS
    _liveness: liveness.Liveness | None = None
    #: The synchronous client every publish, ack and event batch of this channel uses (see
    #: :meth:`conn_or_acquire`); rebuilt when kombu replaces the channel's connection pool.
    _shared_client: Any = None
    #: The push-and-ack script (``workers.ack_along``), registered on first use.
    _push_ack_script: Any = None
    #: This channel's server and database (``liveness.server_of``), computed on first use.
    _server_id: tuple[Any, ...] | None = None

    #: Seconds without a liveness refresh after which a worker is dead (transport option).
    liveness_window = liveness.DEFAULT_WINDOW_S
    #: This worker's node name (transport option; the Celery worker sets its ``-n`` name).
    consumer_name: str | None = None

    #: Dotted path of a function giving the delivery tags this process still works on (transport
    #: option; the Celery layer's view): after a lost connection, the others are handed back.
    running_tags: str | None = None
    #: How many waiting messages one receive takes at most (transport option).
    receive_batch = DEFAULT_RECEIVE_BATCH

    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "liveness_window",
        "consumer_name",
        "running_tags",
        "receive_batch",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ConfigError(
                "workers.transport does not support the global_keyprefix transport option",
                key="broker_transport_options.global_keyprefix",
            )
        self._atomic_keys: list[str] | None = None
        self._recorded: set[str] = set()
        self._no_ack_queues: set[str] = set()
        self._liveness: liveness.Liveness | None = None
        self._receive_client: Any = None
        self._receive_script: Any = None
        self._receipt: int | None = None
        #: How many messages the pending receive may take (its script's ARGV).
        self._receive_want = 1

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """``client``, else this channel's one synchronous client on its current pool (kombu's
        own builds a new client object on every call)."""
        if client:
            yield client
            return
        pool, shared = self.pool, self._shared_client
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared_client = self._create_client()
        yield shared

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        """Consume ``queue``; a consumer with acks registers this process's liveness first."""
        no_ack = kwargs.get("no_ack", args[0] if args else False)
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
            if self._liveness is None and self.ack_emulation:
                self._liveness = liveness.for_channel(
                    self._connparams(), self.consumer_name, float(self.liveness_window)
                )
            if self._liveness is not None:
                if self.running_tags and self._liveness.running is None:
                    self._liveness.running = symbol_by_name(self.running_tags)
                self._liveness.attach(self)
        return super().basic_consume(queue, *args, **kwargs)

    def _brpop_start(self, timeout: float | None = None) -> None:
        """Wait for the one consumed queue without taking its message (kombu's BRPOP otherwise),
        with the take queued behind the wait: the server runs it when the wait ends."""
        queues, lv = self.active_queues, self._liveness
        self._end_receive()  # a wait never read (its connection dropped): over, its reply lost
        if len(queues) != 1 or queues[0] in self._no_ack_queues or lv is None:
            self._atomic_keys = None
            super()._brpop_start(timeout)
            return
        if timeout is None:
            timeout = self.brpop_timeout
        queue = self._queue_cycle.consume(1)[0]
        keys = self._atomic_keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps]
        script = self._script()
        connection = self.client.connection
        self._in_poll = connection
        self._brpop_sent_at = monotonic()
        self._receipt = lv.begin_receive()  # from now on the server may take a message for it
        head, take_keys = keys[0], self._take_keys(keys)
        credit = self.qos.can_consume_max_estimate()
        want = self._receive_want = max(1, min(int(self.receive_batch), credit if credit is not None else 1))
        try:
            connection.send_packed_command(
                connection.pack_commands(
                    [
                        ("BLMOVE", head, head, "RIGHT", "RIGHT", timeout or 0),
                        ("EVALSHA", script.sha, len(take_keys), *take_keys, lv.me.member, want),
                    ]
                )
            )
        except Exception:
            self._end_receive()  # never read: whatever the server took is a lost reply
            raise

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's push; a task's last send (``workers.ack_along.sending``) acks the task's own
        message in the same script, so the hop is queued if and only if the ack happened."""
        along = ack_along.pending()
        if along is not None and along.held_by.server != self._server():
            along = None  # sent to another broker than the one holding the task's message
        if along is None or kwargs.get("_publish_batch") is not None or queue in (self._expires or {}):
            super()._put(queue, message, **kwargs)
            return
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client:
            script = self._push_ack_script
            if script is None:
                script = self._push_ack_script = client.register_script(ack_along.PUSH_ACK_LUA)
            keys, args = [key, *along.keys], [dumps(message), along.tag, along.holder]
            reply = script(keys=keys, args=args, client=client)
        along.done(reply)

    def _server(self) -> tuple[Any, ...]:
        if self._server_id is None:
            self._server_id = liveness.server_of(self._connparams())
        return self._server_id

    def _get_pool(self, asynchronous: bool = False) -> Any:
        """kombu's client pool; on a closed channel (a reconnect closed it while a producer still
        held it) a connection error, which the producer's retry recovers from, where kombu failed
        with ``AttributeError`` and the send with it."""
        if self.connection is None:
            raise RedisConnectionError("channel disconnected: closed by a reconnect")
        return super()._get_pool(asynchronous)

    def _script(self) -> Any:
        """The receive script, loaded on the server once per channel (``EVALSHA`` needs it)."""
        if self._receive_client is None:
            self._receive_client = self._create_client()
            self._receive_script = self._receive_client.register_script(RECEIVE_LUA)
            self._receive_client.script_load(RECEIVE_LUA)
        return self._receive_script

    def _take_keys(self, keys: list[str]) -> list[str]:
        """The receive script's KEYS for the lists ``keys`` (its ARGV: the holder)."""
        return [*keys, self.unacked_index_key, self.unacked_key, OWNER_KEY, LIVENESS_KEY]

    def _end_receive(self) -> None:
        receipt, self._receipt = self._receipt, None
        if receipt is not None and self._liveness is not None:
            self._liveness.end_receive(receipt)

    def _brpop_read(self, **options: Any) -> bool:
        """The wait is over (a message came or the timeout passed): read what the take got."""
        keys, lv = self._atomic_keys, self._liveness
        if not keys or lv is None:
            return super()._brpop_read(**options)  # type: ignore[no-any-return]
        self._atomic_keys = None
        try:
            return self._take(keys, lv, options)
        finally:
            self._end_receive()  # delivered by now, or never: the reconcile may judge its tag
            self._in_poll = None
            self._flush_brpop_reauth()

    def _take(self, keys: list[str], lv: liveness.Liveness, options: dict[str, Any]) -> bool:
        """Read the wait's answer and the take's, then deliver the messages taken (if any)."""
        connection = self.client.connection
        try:
            self.client.parse_response(connection, "BLMOVE", **options)
            try:
                reply = self.client.parse_response(connection, "EVALSHA")
            except NoScriptError:  # Redis restarted or its scripts were flushed: take it now
                reply = self._receive_script(
                    keys=self._take_keys(keys),
                    args=[lv.me.member, self._receive_want],
                    client=self._receive_client,
                )
        except self.connection_errors:
            connection.disconnect()  # reconnect on the next round
            raise
        if not reply:
            raise Empty()
        values = [bytes_to_str(v) for v in reply]
        taken = []
        for i in range(0, len(values), 3):
            key, item, payload = values[i], values[i + 1], loads(values[i + 1])
            tag = payload["properties"]["delivery_tag"] if values[i + 2] == "1" else None
            taken.append((key, item, payload, tag))
        if self._closing or self.connection is None:
            self._hand_back_all(taken, lv)  # closing: each message goes back to its queue
            raise Empty()
        for n, (key, _, payload, tag) in enumerate(taken):
            if tag is not None:
                self._recorded.add(tag)
                lv.held.add(tag)
            dest = key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            try:
                self.connection._deliver(payload, dest)
            except BaseException:
                self._hand_back_all(taken[n + 1 :], lv)  # never delivered: not this worker's
                raise
        return True

    def _hand_back_all(self, taken: list[tuple[str, str, Any, str | None]], lv: liveness.Liveness) -> None:
        """Hand back messages a receive took, the last first: each goes back in its place."""
        for key, item, _, tag in reversed(taken):
            self._hand_back(key, item, tag, lv)

    def _hand_back(self, key: str, item: str, tag: str | None, lv: liveness.Liveness) -> None:
        """Put a message taken for a closing channel back at the head of its list, where it was."""
        if tag is None:  # not recorded (no delivery tag): the list is all there is
            self._receive_client.rpush(key, item)
            return
        self.qos.restore_by_tag(tag, client=lv.client)

    def _restore(self, message: Any, leftmost: bool = False) -> None:
        """Hand back one message at close (kombu's), unless another worker holds it by now."""
        if not self.ack_emulation:
            super()._restore(message, leftmost)
            return
        tag, lv = message.delivery_tag, self._liveness
        me = lv.me.member if lv is not None else None

        def restore_transaction(pipe: Any) -> None:
            p = pipe.hget(self.unacked_key, tag)
            owner = pipe.hget(OWNER_KEY, tag)
            pipe.multi()
            if owner is not None and bytes_to_str(owner) != me:
                return  # swept while this worker was frozen: restored already
            pipe.zrem(self.unacked_index_key, tag).hdel(self.unacked_key, tag).hdel(OWNER_KEY, tag)
            if p:
                M, EX, RK = loads(bytes_to_str(p))
                self._do_restore_message(M, EX, RK, pipe, leftmost)

        with self.conn_or_acquire() as client:
            client.transaction(restore_transaction, self.unacked_key, OWNER_KEY)
        if lv is not None:
            lv.held.discard(tag)

    def close(self) -> None:
        """kombu's close, which a broker gone while a wait was pending no longer aborts.

        A closing channel hands back the messages it holds whose tasks are not running (at a
        warm shutdown the running ones have finished: what is left was never started). Tasks
        still running (a lost connection: Celery keeps them going) ack through this process's
        own client later; the liveness thread hands back any that stop without acking.
        """
        self._closing = True  # as kombu's close does first: a closing channel takes no new message
        if self._in_poll:
            try:
                self._brpop_read()
            except Empty:
                pass
            except self.connection_errors:
                pass  # the broker is gone: close the rest without it
        self._end_receive()
        lv = self._liveness
        if lv is not None and lv.running is not None and self._qos is not None:
            running = lv.running()
            delivered = self._qos._delivered
            busy = list(delivered) if running is None else [t for t in delivered if t in running]
            lv.orphan(busy, float(self.visibility_timeout))  # first: never unknown to the reconcile
            for tag in busy:  # kombu hands back the rest
                delivered.pop(tag, None)
            handed = [t for t in delivered if t not in self._qos._dirty]
            if handed:  # kombu's own line says how many; which ones, for tracing a redelivery
                logger.info("channel closing: handing back %s (no task runs or awaits its ack)", handed)
        super().close()
        if self._liveness is not None:
            self._liveness.detach(self)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with Quorum's channel, whose sends recover from a Redis restart."""

    Channel = Channel

    #: What ``Connection.ensure`` (a publish with retry) recovers from by reconnecting: kombu's
    #: Redis transport declares none, so kombu takes its connection and channel errors; and
    #: kombu's own ``OperationalError``, which a producer's first use of a lazily made channel
    #: raises when the broker is still down (Celery retries it too, for callbacks it sends).
    #: Declaring them also keeps ``ensure`` retrying after a reconnect that did not last (a
    #: Redis still loading its AOF): with none declared it gave up at the next error.
    recoverable_connection_errors = (
        *kombu_redis.Transport.connection_errors,
        *kombu_redis.Transport.channel_errors,
        OperationalError,
    )
    recoverable_channel_errors = ()
