"""A work-around for a transport bug that makes a worker exit when Redis restarts.

kombu 5.7's Redis channel aborts ``close()`` when reading the reply of its pending BRPOP raises
a connection error (Redis went away): the channel stays open, with its un-acked deliveries.
Celery 5.7's consumer then closes the connection a second time, after ``collect()`` has
detached the transport, and that second ``close()`` tries to restore the deliveries through a
connection pool rebuilt from the detached transport: ``AttributeError: 'NoneType' object has no
attribute 'hostname'``, which Celery reports as an unrecoverable error and the worker exits
instead of reconnecting. It happens whenever Redis goes away while a worker has tasks in flight
and a free slot (so a BRPOP is pending): a Redis restart or failover took busy workers down.

The fix: a connection error while draining that BRPOP does not abort ``close()``; the channel
finishes closing on the first attempt (its restore fails against the missing server and is
ignored by the caller; the un-acked messages stay in Redis and come back after the visibility
timeout), so the second ``close()`` has nothing left to do and the worker reconnects.
"""

from __future__ import annotations

from queue import Empty

from kombu.transport import redis as kombu_redis

_original_close = kombu_redis.Channel.close


def _close(self: kombu_redis.Channel) -> None:
    """``Channel.close`` that survives a broker gone while a BRPOP was pending."""
    self._closing = True  # as kombu's close does first: a closing channel takes no new message
    if self._in_poll:
        try:
            self._brpop_read()
        except Empty:
            pass
        except self.connection_errors:
            pass  # the broker is gone: close the rest without it
    _original_close(self)


def install() -> None:
    """Patch kombu's Redis channel (idempotent)."""
    kombu_redis.Channel.close = _close  # type: ignore[method-assign]
