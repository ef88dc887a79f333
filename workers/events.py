"""Task events sent in batches: one Redis ``PUBLISH`` for the events of several tasks.

A worker sends three task events per task (received, started, succeeded/failed) for Flower. Celery
buffers them and publishes the buffer on the next tick of the worker's event loop, which under
load is one or two events per ``PUBLISH``: the largest single Redis cost of a job in the profile
(``bench/profile.py``). :class:`BufferTaskEvents`, a consumer bootstep (``app.steps["consumer"]``)
that starts after Celery's ``Events`` step, keeps Celery's buffer but publishes it from a thread
``FLUSH_AFTER_S`` after the first buffered event (or at once when Celery's ``buffer_limit``
fills), so the events of several tasks share one ``task.multi`` message (a list, which Celery's
event receiver and so Flower unpack), at most a few tens of milliseconds later than before.
Worker events (heartbeats) are not buffered; the buffer is published when the consumer stops or
restarts (a SIGKILLed worker loses at most its last ``FLUSH_AFTER_S`` of task events).

:func:`send_job_event` sends a job's own final event (``workers.publication``) into the same
buffer, so it rides in the next batch instead of taking a producer and a ``PUBLISH`` of its own.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

from celery import Celery, bootsteps

log = logging.getLogger("quorum.events")

#: How long the first buffered event waits for others before the buffer is published.
FLUSH_AFTER_S = 0.02
#: The event group that is buffered (Celery buffers the same one in prefork workers).
GROUP = "task"

#: The buffering dispatcher of each app's running consumer (one per worker process).
_buffering: weakref.WeakKeyDictionary[Celery, Any] = weakref.WeakKeyDictionary()


def send_job_event(app: Celery, hostname: str | None, type_: str, job_id: str, **fields: Any) -> None:
    """Send a task event for ``job_id``: into this worker's buffer when it is this worker's own
    (the next batch carries it), else at once through a dispatcher from the producer pool."""
    dispatcher = _buffering.get(app)
    if dispatcher is not None and dispatcher.enabled and dispatcher.hostname == hostname:
        dispatcher.send(type_, uuid=job_id, **fields)
        return
    with app.events.default_dispatcher(hostname=hostname) as fresh:
        fresh.send(type_, uuid=job_id, **fields)


class _Flusher(threading.Thread):
    """Publishes the dispatcher's buffered task events shortly after each first one."""

    def __init__(self, dispatcher: Any) -> None:
        super().__init__(name="quorum-task-events", daemon=True)
        self.dispatcher = dispatcher
        self._poked = threading.Event()
        self._stopping = False

    def poke(self) -> None:
        """A task event was buffered (Celery's ``on_send_buffered``)."""
        self._poked.set()

    def run(self) -> None:
        while not self._stopping:
            self._poked.wait()
            if self._stopping:
                break
            time.sleep(FLUSH_AFTER_S)  # let the events of other tasks join
            self._poked.clear()
            self.flush()

    def flush(self) -> None:
        try:
            self.dispatcher.flush()
        except Exception:  # monitoring only: Celery keeps what it could not send while offline
            log.warning("could not publish task events", exc_info=True)

    def stop(self) -> None:
        """Publish what is buffered and end the thread."""
        self._stopping = True
        self._poked.set()
        self.join(5.0)
        self.flush()


class BufferTaskEvents(bootsteps.StartStopStep):
    """Buffer the worker's task events and publish them in batches (see the module doc)."""

    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.flusher: _Flusher | None = None
        self._celerys: tuple[Any, Any] = (frozenset(), None)

    def start(self, c: Any) -> None:
        dispatcher = c.event_dispatcher
        if dispatcher is None or not dispatcher.enabled:
            return
        self.flusher = _Flusher(dispatcher)
        self._celerys = (dispatcher.buffer_group, dispatcher.on_send_buffered)
        dispatcher.buffer_group = frozenset({GROUP})
        dispatcher.on_send_buffered = self.flusher.poke
        self.flusher.start()
        _buffering[c.app] = dispatcher

    def stop(self, c: Any) -> None:
        flusher, self.flusher = self.flusher, None
        if flusher is not None:
            _buffering.pop(c.app, None)
            flusher.dispatcher.buffer_group, flusher.dispatcher.on_send_buffered = self._celerys
            flusher.stop()

    def shutdown(self, c: Any) -> None:
        self.stop(c)
