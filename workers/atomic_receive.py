"""At-least-once receive on kombu's Redis transport: a task message is never only in a worker's memory.

kombu receives with ``BRPOP``, which takes the message out of Redis, and records it as un-acked
in a second round trip. A worker killed between the two, or a Redis that stops between them,
loses that message for good: no visibility timeout brings it back (celery/celery#7950,
celery/kombu#305).

Here a channel that consumes one queue waits with ``BLMOVE q q RIGHT RIGHT`` instead. It blocks
until the queue has a message, but leaves the message where it is. Then one Lua script pops it
and records it as un-acked, atomically, and kombu skips its own un-acked record for that
message. Acks, restores and the visibility timeout stay kombu's. A channel consuming several
queues keeps kombu's ``BRPOP``, because ``BLMOVE`` watches one list (Quorum workers consume one
queue, ``quorum``). The script also checks the queue's priority lists, so a message sent with a
priority is taken within one poll timeout (1 s), if not at once.
"""

from __future__ import annotations

from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import loads
from redis.commands.core import Script

#: KEYS: the queue's lists in priority order, then the un-acked index and hash (kombu's names).
#: Pops the first message found and records it as kombu's ``QoS.append`` would, in one step.
#: Replies ``{list, message, recorded}``; ``recorded`` is "0" for a message without a delivery
#: tag (not kombu's JSON): kombu then handles it as it always has.
RECEIVE_LUA = """
local lists = #KEYS - 2
for i = 1, lists do
  local item = redis.call('RPOP', KEYS[i])
  if item then
    local ok, msg = pcall(cjson.decode, item)
    local props = ok and type(msg) == 'table' and msg['properties']
    local tag = type(props) == 'table' and props['delivery_tag']
    if type(tag) ~= 'string' then
      return {KEYS[i], item, '0'}
    end
    local info = type(props['delivery_info']) == 'table' and props['delivery_info'] or {}
    local now = redis.call('TIME')
    redis.call('ZADD', KEYS[lists + 1], tonumber(now[1]) + tonumber(now[2]) / 1000000, tag)
    redis.call('HSET', KEYS[lists + 2], tag, '[' .. item .. ',' .. cjson.encode(info['exchange'] or '')
      .. ',' .. cjson.encode(info['routing_key'] or '') .. ']')
    return {KEYS[i], item, '1'}
  end
end
return false
"""

_original_start = kombu_redis.Channel._brpop_start
_original_read = kombu_redis.Channel._brpop_read
_original_append = kombu_redis.QoS.append
_script: Script | None = None


def _receive_script(client: Any) -> Script:
    global _script
    if _script is None:
        _script = client.register_script(RECEIVE_LUA)
    return _script


def _start(self: kombu_redis.Channel, timeout: float | None = None) -> None:
    """Wait for the one consumed queue without taking its message (kombu's BRPOP otherwise)."""
    if len(self.active_queues) != 1 or self.global_keyprefix:
        self._atomic_keys = None
        return _original_start(self, timeout)
    if timeout is None:
        timeout = self.brpop_timeout
    queue = self._queue_cycle.consume(1)[0]
    self._atomic_keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps]
    self._in_poll = self.client.connection
    self._brpop_sent_at = monotonic()
    head = self._atomic_keys[0]
    self.client.connection.send_command("BLMOVE", head, head, "RIGHT", "RIGHT", timeout or 0)
    return None


def _read(self: kombu_redis.Channel, **options: Any) -> bool:
    """The wait is over (a message came or the timeout passed): take one message, atomically."""
    keys = self._atomic_keys
    if not keys:
        return _original_read(self, **options)  # type: ignore[no-any-return]
    self._atomic_keys = None
    try:
        try:
            self.client.parse_response(self.client.connection, "BLMOVE", **options)
        except self.connection_errors:
            self.client.connection.disconnect()  # reconnect on the next round
            raise
        if self._closing or self.connection is None:
            raise Empty()  # closing: the message stays queued for another consumer
        client = _client(self)
        reply = _receive_script(client)(
            keys=[*keys, self.unacked_index_key, self.unacked_key], args=[], client=client
        )
        if not reply:
            raise Empty()
        key, item, recorded = (kombu_redis.bytes_to_str(v) for v in reply)
        payload = loads(item)
        if recorded == "1":
            _recorded(self).add(payload["properties"]["delivery_tag"])
        dest = key.rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(dest)
        self.connection._deliver(payload, dest)
        return True
    finally:
        self._in_poll = None
        flush = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.6
        if flush is not None:
            flush()


def _append(self: kombu_redis.QoS, message: Any, delivery_tag: str) -> None:
    """kombu's un-acked record, unless the receive script has written it already."""
    recorded = _recorded(self.channel)
    if delivery_tag in recorded:
        recorded.discard(delivery_tag)
        virtual.QoS.append(self, message, delivery_tag)  # in memory only: Redis has it
        return
    _original_append(self, message, delivery_tag)


def _client(channel: kombu_redis.Channel) -> Any:
    """The channel's client for the receive script (one per channel, not one per message)."""
    client = channel.__dict__.get("_quorum_receive_client")
    if client is None:
        client = channel.__dict__["_quorum_receive_client"] = channel._create_client()
    return client


def _recorded(channel: kombu_redis.Channel) -> set[str]:
    """Delivery tags this channel's receive script recorded and kombu has not appended yet."""
    tags: set[str] = channel.__dict__.setdefault("_quorum_recorded_tags", set())
    return tags


def install() -> None:
    """Patch kombu's Redis channel and QoS (idempotent; before the worker opens its channels)."""
    kombu_redis.Channel._atomic_keys = None
    kombu_redis.Channel._brpop_start = _start  # type: ignore[method-assign]
    kombu_redis.Channel._brpop_read = _read  # type: ignore[method-assign]
    kombu_redis.QoS.append = _append  # type: ignore[method-assign]
