"""A task's message acknowledged in the round trip of the task's last write, not in one of its own.

With ``task_acks_late`` Celery acks a task's message after the task returns: one more round trip
per task, on the worker's event-loop thread (~2 % of a failover job's worker CPU). A task whose
last write hands its job on or ends it can ack in that round trip instead, atomically with the
write, so a crash at any point still redelivers a message whose work is not safely in Redis:

- a send (:func:`sending`): the entry's first failover hop, a failed hop's next one. The
  transport (``workers.transport``) pushes the message and acks in one script: the hop is queued
  if and only if the ack happened.
- an answer (:func:`if_answered`): a script behind the answer's store acks only if the job's
  answer is stored by then; a store that failed, or a guard held by a run still going, leaves
  the message to Celery's ack (and to redelivery, if this worker dies first).

Celery's own ack then finds the message settled (``Liveness.acked_along``) and sends nothing.
Nothing rides where it would be unsafe: a chord's header is several sends (its first could be
acked before its last went out), and an answer rides only where the broker is the state's
server (the default: one URL for both).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from orchestration.state.scripts import Queued, sha_of
from workers import liveness
from workers.liveness import ACK_FUNCTION_LUA, OWNER_KEY

#: KEYS: the queue's list, unacked index, unacked, owners. ARGV: the message, tag, holder. Pushes
#: the message, then acks ``tag`` (1), unless another holder has it now (0).
PUSH_ACK_LUA = (
    ACK_FUNCTION_LUA
    + "redis.call('LPUSH', KEYS[1], ARGV[1])\n"
    + "return ack(KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3])\n"
)

#: KEYS: the job's answer, unacked index, unacked, owners. ARGV: tag, holder. Acks ``tag`` if the
#: answer is stored (1, or 0: another holder has it now); -1, nothing done, if it is not.
ACK_IF_ANSWERED_LUA = (
    ACK_FUNCTION_LUA
    + "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"
    + "return ack(KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2])\n"
)


@dataclass(frozen=True)
class AckAlong:
    """The ack of one held task message, to ride in a write's round trip."""

    tag: str
    holder: str
    #: The un-acked index, the un-acked hash and the holders.
    keys: tuple[str, str, str]
    held_by: liveness.Liveness

    def done(self, reply: Any) -> None:
        """Take the script's reply: acked (1), or another holder's now (0, as Celery's ack would
        find it); either way Celery's ack has nothing left to send."""
        if reply in (0, 1):
            self.held_by.acked_along.add(self.tag)


def for_request(request: Any) -> AckAlong | None:
    """The ack of the message ``request`` (a task's request) was delivered in, when this process
    holds it with crash recovery on (None otherwise: e.g. a task called directly)."""
    properties = getattr(request, "properties", None)
    tag = properties.get("delivery_tag") if isinstance(properties, dict) else None
    if not isinstance(tag, str):
        return None
    lv = liveness.holding(tag)
    if lv is None or lv.unacked_keys is None:
        return None
    return AckAlong(tag, lv.me.member, (*lv.unacked_keys, OWNER_KEY), lv)


_local = threading.local()


@contextmanager
def sending(request: Any) -> Iterator[None]:
    """Around a task's last send (exactly one message): the push acks ``request``'s message."""
    along = for_request(request)
    _local.along = along
    try:
        yield
    finally:
        _local.along = None


def pending() -> AckAlong | None:
    """The ack that this thread's next push carries (inside :func:`sending`), if any."""
    along: AckAlong | None = getattr(_local, "along", None)
    if along is None or along.tag in along.held_by.acked_along:
        return None
    return along


def if_answered(request: Any, answer_key: str) -> Queued[int] | None:
    """A step acking ``request``'s message if the job's answer (``answer_key``) is stored, for the
    round trip that stores it, behind the store (the caller checks the broker is that server)."""
    along = for_request(request)
    if along is None:
        return None
    keys, args = [answer_key, *along.keys], [along.tag, along.holder]
    sha = sha_of(ACK_IF_ANSWERED_LUA)

    def queue(pipe: Any) -> int:
        pipe.evalsha(sha, len(keys), *keys, *args)
        return 1

    def parse(replies: list[Any]) -> int:
        along.done(replies[0])
        return int(replies[0])

    return Queued(queue, parse, (ACK_IF_ANSWERED_LUA,))
