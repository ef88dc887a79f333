"""Who holds each un-acked task message, and whether that worker is still alive.

Every worker process that consumes with acks keeps one liveness record in Redis (a member of the
``unacked_liveness`` sorted set, scored with the server's ``TIME``), refreshed every quarter of
the liveness window from a thread of its own, so a long task, a busy event loop or a warm
shutdown waiting for running tasks never lets it lapse. The receive script
(``workers.transport``) records the holder of each message in ``unacked_owner`` in the same step
that takes it. On each refresh a live worker also sweeps: a consumer whose record is older than
the window is dead, and one Lua step hands its messages to the sweeper (at most one sweeper gets
each), which puts them back on their queues. A restarted worker (same node name, its previous
process gone) sweeps its previous incarnation's messages at once.

Redis restarts: a sweeper declares others dead only once its own refreshes have run without a gap
for a whole window, so after a restart (or a start) every live worker has re-registered first.
And each refresh reconciles: a message Redis records as held by this process that the process
does not hold (a receive whose reply was lost as Redis stopped, or a hand-back at a channel close
that failed with Redis gone) is handed back once seen so on two refreshes in a row with every
receive that was in flight at the first one finished since (a reply still on its way is never
taken for a lost one).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from time import monotonic
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

#: Redis keys of the crash recovery, besides kombu's ``unacked``, ``unacked_index`` and
#: ``unacked_mutex`` (the ACL role of a worker needs all five, plus the queues and
#: ``_kombu.binding.*``): delivery tag -> holder, and holder -> last refresh (server time).
OWNER_KEY = "unacked_owner"
LIVENESS_KEY = "unacked_liveness"
#: Default liveness window (s): a worker silent this long is dead and its messages are restored.
DEFAULT_WINDOW_S = 4.0
#: How long an ack keeps retrying through a broker outage before Celery logs it as failed.
ACK_RETRY_S = 15.0

#: KEYS: liveness, owners. ARGV: me, window, sweep (1: may judge others), then holders known dead
#: (this node's previous incarnations). Refreshes ``me``; hands the messages of every dead holder
#: (stale record, no record, or named) to ``me``. Replies ``{claimed tags, dead holders, tags
#: held by me}`` (the last for the reconcile: what Redis says this process holds).
HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
local sweep = ARGV[3] == '1'
local dead, names, any = {}, {}, false
for i = 4, #ARGV do dead[ARGV[i]] = true; names[#names + 1] = ARGV[i]; any = true end
if sweep then
  for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))) do
    if not dead[c] then dead[c] = true; names[#names + 1] = c end
    any = true
  end
end
for _, c in ipairs(names) do redis.call('ZREM', KEYS[1], c) end
local claimed, mine, live = {}, {}, {}
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  local tag, owner = flat[i], flat[i + 1]
  if owner == ARGV[1] then
    mine[#mine + 1] = tag
  elseif any then
    local gone = dead[owner]
    if not gone and sweep then
      if live[owner] == nil then live[owner] = redis.call('ZSCORE', KEYS[1], owner) ~= false end
      gone = not live[owner]
    end
    if gone then
      redis.call('HSET', KEYS[2], tag, ARGV[1])
      claimed[#claimed + 1] = tag
    end
  end
end
return {claimed, names, mine}
"""

#: kombu's ack of ``tag`` (its un-acked index, hash and holder entries), unless another holder
#: has the message now (it was restored while this worker was frozen, and taken again): 1 acked,
#: 0 another's. A Lua function, so that scripts acking along with another write share it.
ACK_FUNCTION_LUA = """
local function ack(index, unacked, owners, tag, me)
  local owner = redis.call('HGET', owners, tag)
  if owner and owner ~= me then return 0 end
  redis.call('ZREM', index, tag)
  redis.call('HDEL', unacked, tag)
  redis.call('HDEL', owners, tag)
  return 1
end
"""

#: KEYS: unacked index, unacked, owners. ARGV: tag, me. The ack on its own.
ACK_LUA = ACK_FUNCTION_LUA + "return ack(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])\n"


@dataclass(frozen=True)
class Holder:
    """A consuming process: its node name, host, pid and an id for this incarnation."""

    name: str
    host: str
    pid: int
    incarnation: str

    @property
    def member(self) -> str:
        return f"{self.name}|{self.host}|{self.pid}|{self.incarnation}"

    @classmethod
    def parse(cls, member: str) -> Holder | None:
        parts = member.rsplit("|", 3)
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), parts[3])

    def previous(self, other: Holder) -> bool:
        """Whether ``other`` is an earlier incarnation of this node whose process is gone."""
        if other.name != self.name or other.host != self.host or other == self:
            return False
        return other.pid == self.pid or not pid_alive(other.pid)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_incarnation: tuple[int, str] | None = None


def this_process(name: str | None) -> Holder:
    """This process as a holder (a new incarnation id per process, also after a fork)."""
    global _incarnation
    if _incarnation is None or _incarnation[0] != os.getpid():
        _incarnation = (os.getpid(), uuid.uuid4().hex[:12])
    host = socket.gethostname()
    return Holder(name or f"kombu@{host}", host, _incarnation[0], _incarnation[1])


class Liveness:
    """One process's liveness record on one Redis and its sweep (a daemon thread)."""

    def __init__(self, connparams: dict[str, Any], me: Holder, window: float) -> None:
        self.me, self.window = me, window
        self.server = server_of(connparams)
        self.interval = window / 4
        timeout = max(1.0, self.interval)
        base = {**connparams, "socket_timeout": timeout, "socket_connect_timeout": timeout}
        base["health_check_interval"] = 0
        base.pop("max_connections", None)  # acks come from every pool thread at once
        # The refresh never retries on its own: a failed one is a gap, which a sweep must see.
        self._beat = redis.Redis(connection_pool=redis.ConnectionPool(**base, retry=Retry(NoBackoff(), 0)))
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), int(ACK_RETRY_S / 0.5))
        #: Acks and restores: outlives any one channel, so a task finishing after a reconnect
        #: still clears its message (a held message whose holder lives is never restored).
        self.client = redis.Redis(
            connection_pool=redis.ConnectionPool(
                **base, retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError]
            )
        )
        self._heartbeat = self._beat.register_script(HEARTBEAT_LUA)
        self.ack_script = self.client.register_script(ACK_LUA)
        self.held: set[str] = set()
        #: Held messages a task acked in the round trip of its last write (``workers.ack_along``):
        #: Celery's own ack of them then takes no round trip.
        self.acked_along: set[str] = set()
        #: kombu's un-acked index and hash keys, from the first channel attached.
        self.unacked_keys: tuple[str, str] | None = None
        self.channels: weakref.WeakSet[Any] = weakref.WeakSet()
        self._claimed: set[str] = set()
        #: Held messages of closed channels whose tasks were running: tag -> [when to hand it
        #: back (monotonic) unless acked by then, since when it has not been running or None].
        self._orphans: dict[str, list[Any]] = {}
        #: The delivery tags this process is still working on (the Celery layer's view), or None.
        self.running: Callable[[], set[str] | None] | None = None
        #: Receives under way (ids): from taking a message until it is in a channel's delivered set.
        self._receiving: set[int] = set()
        self._receipts = itertools.count()
        #: Held by this process in Redis, unknown to it at the last refresh: tag -> the receives
        #: in flight then (any of them may still deliver it).
        self._unknown: dict[str, frozenset[int]] = {}
        self._steady_since: float | None = None
        self._last_ok: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def attach(self, channel: Any) -> None:
        """A channel consumes with acks: be registered before it takes its first message."""
        with self._lock:
            self.channels.add(channel)
            if self.unacked_keys is None:
                self.unacked_keys = (channel.unacked_index_key, channel.unacked_key)
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._tick(self._previous_incarnations())
            self._thread = threading.Thread(target=self._run, name="quorum-liveness", daemon=True)
            self._thread.start()

    def detach(self, channel: Any) -> None:
        """A channel closed: stop refreshing once no channel consumes and nothing is held."""
        with self._lock:
            self.channels.discard(channel)
            if self.channels or self.held or self._claimed:
                return
            self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self._beat.zrem(LIVENESS_KEY, self.me.member)  # a clean exit: nothing to sweep

    def orphan(self, tags: list[str], visibility_timeout: float) -> None:
        """A lost connection's channel held ``tags``: their tasks may still run and ack them;
        any not acked within the visibility timeout is handed back, as kombu would."""
        due = monotonic() + visibility_timeout
        for tag in tags:
            self._orphans.setdefault(tag, [due, None])

    def begin_receive(self) -> int:
        """A receive starts (the server may take a message for it from now on): its receipt."""
        receipt = next(self._receipts)
        self._receiving.add(receipt)
        return receipt

    def end_receive(self, receipt: int) -> None:
        """The receive is over: its message, if any, is delivered (or its reply lost)."""
        self._receiving.discard(receipt)

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        """Around one receive, from taking a message until it is delivered to the channel: the
        reconcile never hands back a message whose reply may still be on its way."""
        receipt = self.begin_receive()
        try:
            yield
        finally:
            self.end_receive(receipt)

    def _run(self) -> None:
        while not self._stop.wait(self._next_wait()):
            try:
                self._tick([])
            except Exception:  # never let the refresh thread die: its worker would look dead
                logger.exception("liveness: refresh failed unexpectedly; trying again")
                self._last_ok = self._steady_since = None

    def _next_wait(self) -> float:
        if self._last_ok is None:
            return self.interval
        return max(0.0, self._last_ok + self.interval - monotonic())

    # -- one refresh -----------------------------------------------------------------------

    def _previous_incarnations(self) -> list[str]:
        try:
            members = [m.decode() for m in self._beat.zrange(LIVENESS_KEY, 0, -1)]
            owners = {o.decode() for o in self._beat.hvals(OWNER_KEY)}
        except redis.RedisError:
            return []
        found = [m for m in set(members) | owners if (h := Holder.parse(m)) and self.me.previous(h)]
        if found:
            logger.warning("liveness: restoring the messages of this node's previous run(s) %s", found)
        return found

    def _tick(self, dead: list[str]) -> None:
        started = monotonic()
        sweep = self._steady_since is not None and started - self._steady_since >= self.window
        try:
            claimed, gone, mine = self._heartbeat(
                keys=[LIVENESS_KEY, OWNER_KEY],
                args=[self.me.member, self.window, 1 if sweep else 0, *dead],
                client=self._beat,
            )
        except redis.RedisError as e:
            if self._last_ok is not None:
                logger.warning("liveness: refresh failed (%s); sweeping waits a window after it recovers", e)
            self._last_ok = self._steady_since = None
            self._unknown = {}
            return
        if self._last_ok is None or started - self._last_ok > self.window / 2:
            self._steady_since = started  # a gap: others may not have re-registered yet
        self._last_ok = started
        if gone:
            logger.warning(
                "liveness: %s lapsed; restoring %d of their messages",
                [g.decode() for g in gone],
                len(claimed),
            )
        self._claimed.update(t.decode() for t in claimed)
        self._reconcile({t.decode() for t in mine})
        if self._orphans:
            self._settle_orphans(started)
        if self._claimed:
            self._restore_claimed()

    def _reconcile(self, mine: set[str]) -> None:
        """Hand back what Redis says this process holds and it does not: unknown on two refreshes
        in a row, with every receive in flight at the first one finished since."""
        in_flight = frozenset(self._receiving)  # after Redis answered: a receive it records is here
        known = self._known()  # ... or, finished, delivered (so known) by now
        if known is None:
            return  # Celery's view changed while read: judge on the next refresh
        unknown = mine - known
        due = {t for t in unknown if t in self._unknown and not self._unknown[t] & in_flight}
        self._unknown = {t: self._unknown.get(t, in_flight) for t in unknown - due}
        if due:
            logger.warning(
                "liveness: handing back %d message(s) Redis records as held here that this worker "
                "never got (a reply lost as Redis went away): %s",
                len(due),
                sorted(due),
            )
            self._claimed |= due

    def _known(self) -> set[str] | None:
        """Delivery tags this process holds: in an open channel, running, orphaned or claimed."""
        running = self.running() if self.running is not None else set()
        if running is None:
            return None
        known = set(running) | set(self._orphans) | set(self._claimed)
        try:
            for channel in list(self.channels):
                qos = channel._qos
                if qos is not None:
                    known.update(list(qos._delivered))
        except RuntimeError:  # changed size while copied (another thread acked)
            return None
        return known

    def _settle_orphans(self, now: float) -> None:
        """Hand back the lost channels' messages whose tasks will not ack them: not running for
        longer than an ack may take to get through (Celery marks a task done, then acks), or
        past the visibility timeout."""
        running = self.running() if self.running is not None else None
        grace = ACK_RETRY_S + self.window
        for tag, state in list(self._orphans.items()):
            if tag not in self.held:
                del self._orphans[tag]  # acked (or restored) since
                continue
            if running is not None and tag in running:
                state[1] = None
            elif running is not None and state[1] is None:
                state[1] = now  # stopped running (or never ran): its ack may still be on its way
            if state[0] <= now or (state[1] is not None and now - state[1] >= grace):
                del self._orphans[tag]
                self._claimed.add(tag)
                logger.warning("liveness: handing back %s (held over a lost connection, not acked)", tag)

    def _restore_claimed(self) -> None:
        """Put the messages this process took over back on their queues (retried next refresh)."""
        channel = next((c for c in list(self.channels) if not c.closed and c.connection), None)
        if channel is None:
            return
        for tag in list(self._claimed):
            try:
                channel.qos.restore_by_tag(tag, client=self.client)
            except redis.RedisError:
                logger.warning("liveness: restoring %s failed; retrying", tag, exc_info=True)
                return
            self._claimed.discard(tag)
            self.held.discard(tag)


_registry: dict[tuple[Any, ...], Liveness] = {}
_registry_lock = threading.Lock()


def server_of(connparams: dict[str, Any]) -> tuple[Any, ...]:
    """Which server and database a kombu channel's connection parameters name."""
    return (connparams.get("host"), connparams.get("port"), connparams.get("path"), connparams.get("db"))


def for_channel(connparams: dict[str, Any], name: str | None, window: float) -> Liveness:
    """This process's liveness on the channel's Redis (one per server and database)."""
    me = this_process(name)
    key = (*server_of(connparams), connparams.get("username"), me, window)
    with _registry_lock:
        found = _registry.get(key)
        if found is None:
            found = _registry[key] = Liveness(connparams, me, window)
        return found


def holding(tag: str) -> Liveness | None:
    """The liveness of this process that holds the message ``tag`` (None: none holds it)."""
    with _registry_lock:
        found = list(_registry.values())
    return next((lv for lv in found if tag in lv.held), None)


def holders(client: redis.Redis) -> Iterable[tuple[str, float]]:
    """Every registered holder and its last refresh (server time), for status and tests."""
    return [(m.decode(), s) for m, s in client.zrange(LIVENESS_KEY, 0, -1, withscores=True)]
