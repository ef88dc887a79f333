"""Canvas builders: the signatures that make up a job (attempts, failover hops, chords).

Every signature is signed (:mod:`workers.signing`) and carries the job id and small state only:
the text and schema are in the job's spec in Redis. Task ids inside a job are derived from the
job id (``<job>.h<hop>``, ``<job>.c<i>``, ``<job>.m``), so a redelivered task re-sends the same
ids: its attempts are recognised by the cost ledger and the publication guard instead of being
counted or answered twice. The job id itself is the entry task's alone.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery, chord
from celery.canvas import Signature
from celery.result import AsyncResult
from kombu import Producer
from kombu.exceptions import BatchPublishError
from kombu.utils.uuid import uuid

from workers.signing import signed

MODE_FAILOVER = "failover"
MODE_CHORD = "chord"
#: Chord bodies a worker runs in its own process (:class:`InlineBody`); any other task named by
#: an inline body's dict is sent as a message, as Celery would.
INLINE_BODIES = frozenset({"quorum.merge", "quorum.gen_select", "quorum.gen_round"})

log = logging.getLogger("quorum.canvas")


def send_batched(app: Celery, send: Callable[[Producer], Any]) -> None:
    """Run ``send(producer)`` with its messages going out in one pipelined write (kombu's publish
    batch), not a round trip each: a chord of three sent by a worker is one ``LPUSH`` round trip,
    not three (from a producer, whose sends announce themselves, their ``task-sent`` events go
    in the same write: one, not six). A batch whose write failed (kombu cannot say what arrived:
    ``BatchPublishError``) is sent again message by message, with the publish retry policy that
    rides out a Redis restart. A message may then arrive twice, as a redelivered one does: a
    call counts once by its task id, and the job is answered once behind its publication guard."""
    with app.producer_or_acquire() as p:
        try:
            with p.batch():
                send(p)
            return
        except BatchPublishError as e:
            log.warning("a batched send failed (%s); sending its messages one by one", e.__cause__ or e)
        send(p)


def text_repr(text: str) -> str:
    """How a text shows in Flower and logs: its length and a short hash, never its content."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"<text {len(text)} chars sha256:{digest}>"


def redacted_kwargs(kwargs: dict[str, Any]) -> str:
    """``kwargsrepr`` for a job: every long string replaced by its length and hash."""
    shown = {
        k: text_repr(v) if isinstance(v, str) and (k in ("text", "prompt") or len(v) > 64) else v
        for k, v in kwargs.items()
    }
    return repr(shown)


def hop_id(job_id: str, hop: int) -> str:
    """Task id of failover hop ``hop`` of a job."""
    return f"{job_id}.h{hop}"


def candidate_id(job_id: str, index: int) -> str:
    """Task id of chord candidate ``index`` of a job."""
    return f"{job_id}.c{index}"


def merge_id(job_id: str) -> str:
    """Task id of a job's chord body (the job id itself belongs to the entry task only)."""
    return f"{job_id}.m"


@Signature.register_type(name="quorum_inline")
class InlineBody(Signature):
    """A chord body run by the worker whose header task completes the chord, in that task's
    thread, the way Celery runs an errback (``Task.__call__``, no message): a consensus job's
    merge costs no task of its own (no publish, receive, ack or task events, and the header
    results are not copied into a message). The chord stays Celery's: the header tasks, their
    count and the claim on the body's dispatch (:mod:`workers.backend`) are unchanged, and the
    header task that completes the chord is acked only after its body ran, so a worker that dies
    meanwhile hands that header task back; its next run takes the claim over and runs the body."""

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: Celery | None = None) -> InlineBody:
        return cls(d, app=app)

    def apply_async(
        self, args: Any = None, kwargs: Any = None, route_name: Any = None, **options: Any
    ) -> AsyncResult:
        if self.task not in INLINE_BODIES:  # only Quorum's own bodies run in the worker's process
            return super().apply_async(args, kwargs, route_name=route_name, **options)
        args, kwargs, _ = self._merge(args, kwargs, options)
        self.type(*args, **kwargs)
        return self.AsyncResult(self.id)


class FlatChord(chord):
    """A chord whose header is plain task signatures, sent as Celery's chord sends it, without
    its canvas's generality: the same messages (group id and index, the body in each header,
    root and parent ids, task-sent events) and the same chord size in the result backend, but
    no cloning, freezing of a group, barrier or per-task ``apply_async`` (a third of an entry
    task's CPU in a consensus job went there). Anything else (arguments, options, a nested
    header, eager mode) goes through Celery's own ``apply_async``. tests/unit/test_flat_chord.py
    compares the messages of both with each other."""

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: Any = None, **options: Any) -> Any:
        header = list(self.tasks.tasks) if hasattr(self.tasks, "tasks") else list(self.tasks)
        app = self._get_app(self.body)
        plain = bool(header) and all(type(s) is Signature and not s.args for s in header)
        if args or kwargs or task_id or options or self.options or not plain or app.conf.task_always_eager:
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        group_id = uuid()
        body = self.body
        body.freeze(group_id=group_id)  # Celery's: the body keeps its id and learns the group's
        app.backend.set_chord_size(group_id, len(header))

        def send_header(producer: Producer) -> None:
            for index, sig in enumerate(header):
                app.send_task(
                    sig.task, (), sig.kwargs, producer=producer, group_id=group_id, group_index=index,
                    chord=body, add_to_parent=False, **sig.options,
                )  # fmt: skip

        send_batched(app, send_header)  # the header in one round trip; sent again, the same group
        return body.AsyncResult(body.id)


def inline_body(
    app: Celery, key: bytes, task: str, kwargs: dict[str, Any], task_id: str, **options: Any
) -> Signature:
    """A chord body the completing call runs (:class:`InlineBody`): signed for no task id, as
    it runs without one (like an errback); ``task_id`` is Celery's name for the body."""
    body = signed(app, key, task, kwargs, ignore_result=True, **options)
    body.set(task_id=task_id)
    return InlineBody({**body, "subtask_type": "quorum_inline"}, app=app)


def call_sig(app: Celery, key: bytes, job_id: str, index: int, label: str, **state: Any) -> Signature:
    """One provider call: the job id, the candidate's index and small state; the text and schema
    are read from the job's spec in Redis. A ``closed_at`` of None is left out of the message
    (the call then acquires its breaker); when given, it is signed like every other argument."""
    if state.get("closed_at", 0) is None:
        state = {k: v for k, v in state.items() if k != "closed_at"}
    mode = state["mode"]
    task_id = hop_id(job_id, state["hop"]) if mode == MODE_FAILOVER else candidate_id(job_id, index)
    return signed(
        app,
        key,
        "quorum.call",
        {"job_id": job_id, "index": index, **state},
        task_id=task_id,
        argsrepr=f"({job_id!r}, {label!r}, {mode})",
        # Nobody reads a call's stored outcome: a failover hop publishes the job's answer itself
        # or hands its error to its errback, and a chord call's outcome goes into its chord's
        # results (Celery counts a header task whose result is ignored all the same). Storing it
        # too cost an encode and a write per call, and a key per call for a day.
        ignore_result=True,
    )


def failover_attempt(
    app: Celery,
    key: bytes,
    job_id: str,
    index: int,
    label: str,
    hop: int,
    attempts: list[dict[str, Any]],
    countdown: float = 0,
    closed_at: float | None = None,
) -> Signature:
    """Attempt ``hop`` (candidate ``index``): success publishes the answer, failure runs the
    errback inline, which sends the next hop or fails the job. ``closed_at``: when the hop's
    sender (the entry, or the errback of the hop before) read this candidate's breaker CLOSED
    (the call's only; the errback does not carry it)."""
    state = {"hop": hop, "attempts": attempts}
    sig = call_sig(app, key, job_id, index, label, mode=MODE_FAILOVER, closed_at=closed_at, **state)
    sig.link_error(signed(app, key, "quorum.failover_next", {"job_id": job_id, "index": index, **state}))
    if countdown > 0:
        sig.set(countdown=countdown)
    return sig


def consensus_chord(
    app: Celery,
    key: bytes,
    job_id: str,
    calls: list[tuple[int, str]],
    skipped: list[dict[str, Any]],
    closed_at: Mapping[int, float | None] | None = None,
) -> Signature:
    """A chord: one provider call per ``(index, label)``, then the merge, run by the worker that
    completes the chord (:class:`InlineBody`; signed, like an errback, for no task id, its own
    id ``<job>.m`` is Celery's name for the body); ``closed_at``: by index, when the entry read
    that candidate's breaker CLOSED."""
    closed = closed_at or {}
    header = [
        call_sig(app, key, job_id, i, label, mode=MODE_CHORD, hop=0, skipped=skipped, closed_at=closed.get(i))
        for i, label in calls
    ]
    body = inline_body(app, key, "quorum.merge", {"job_id": job_id, "skipped": skipped}, merge_id(job_id))
    return FlatChord(header, body)
