"""Celery tasks of generation jobs. Public API: ``quorum.generate``; the rest are its hops
(internal: signed by the sending worker, refused unsigned).

Only the entry task runs under the job id; the job's spec is stored once in Redis and every hop
carries the job id and its progress. Each hop has its own id derived from the job id:

- ``quorum.generate`` → ``chord(quorum.gen_call × candidates, quorum.gen_select)`` (``<job>.s``);
- ``gen_select`` (tournament) → ``chord(quorum.gen_call × judges, quorum.gen_round)``
  (``<job>.r<n>``), and each ``gen_round`` sends the next round's chord until one answer is left;
- ``gen_select`` (hybrid merge, escalation) → ``chain(quorum.gen_call, quorum.gen_finish)``
  (``<job>.f``);
- early stop: ``quorum.generate`` → ``chain(gen_call(c0), quorum.gen_step)`` (``<job>.st0``), and
  each step sends ``chain(gen_call(next), gen_step)`` or goes on as ``gen_select`` would.

The hop that ends the job publishes the answer (or the typed error) under the job id behind the
publication guard, with a task event for Flower (:mod:`workers.publication`). Provider-call
tasks never raise (they return :class:`Attempt` outcomes), so one failed candidate or judge
never fails a chord. Bodies stay thin: the steps live in ``orchestration.generation.steps``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, chain
from celery.canvas import Signature
from celery.exceptions import Ignore
from celery.utils.log import get_task_logger

from orchestration.breaker import BreakerSnapshot, admission
from orchestration.candidates import candidate_providers
from orchestration.errors import QuorumError
from orchestration.extraction import skipped_attempt
from orchestration.generation import (
    Done,
    FollowUp,
    GenerationSpec,
    JudgeRound,
    NextCandidate,
    Progress,
    ProviderCall,
    Step,
    after_call,
    after_candidate,
    after_candidates,
    after_round,
    cached_result,
    candidate_call,
    generation_invoke,
    parse_generation_request,
    prepare_generate,
    require_answers,
)
from orchestration.models import Attempt
from workers import ack_along
from workers.app import app
from workers.canvas import FlatChord, candidate_id, inline_body
from workers.publication import (
    cache_along,
    ending_typed,
    enter,
    load_spec,
    open_job,
    publish_success,
)
from workers.requests import InternalTask, hostname_of
from workers.runtime import Runtime, runtime
from workers.signing import signed, worker_key

log: logging.Logger = get_task_logger("quorum.generation")


# --------------------------------------------------------------------------- signatures


def call_sig(
    key: bytes, spec: GenerationSpec, call: ProviderCall, task_id: str, closed_at: float | None = None
) -> Signature:
    """One provider call of the job (its prompt travels in this message only; Flower shows labels);
    ``closed_at`` (signed; left out when None): when the entry read its breaker CLOSED."""
    kwargs: dict[str, Any] = {"call": call.model_dump(mode="json"), "deadline": spec.deadline}
    if closed_at is not None:
        kwargs["closed_at"] = closed_at
    return signed(
        app,
        key,
        "quorum.gen_call",
        kwargs,
        task_id=task_id,
        argsrepr=f"({spec.job_id!r}, {call.role}, {call.label!r})",
        ignore_result=True,  # its outcome goes into its chord's results or its chain's next message
    )


def hop_sig(key: bytes, name: str, job_id: str, progress: Progress, task_id: str) -> Signature:
    """A step of the job that may end it: the job id and the progress so far, under its own id."""
    return signed(
        app,
        key,
        name,
        {"job_id": job_id, "progress": progress.model_dump(mode="json")},
        task_id=task_id,
        argsrepr=f"({job_id!r},)",
        ignore_result=True,
    )


def body_sig(key: bytes, name: str, job_id: str, progress: Progress, task_id: str) -> Signature:
    """A chord body of the job (``gen_select``, ``gen_round``): run by the call that completes the
    chord, in its worker (``InlineBody``), under ``task_id`` as Celery's name for it."""
    kwargs = {"job_id": job_id, "progress": progress.model_dump(mode="json")}
    return inline_body(app, key, name, kwargs, task_id, argsrepr=f"({job_id!r},)")


def step_canvas(
    key: bytes, spec: GenerationSpec, progress: Progress, step: JudgeRound | FollowUp | NextCandidate
) -> Any:
    """The canvas that carries a job on from ``step`` (every task with an id derived from the job's)."""
    job = spec.job_id
    if isinstance(step, JudgeRound):
        round_ = len(progress.rounds)
        header = [call_sig(key, spec, c, f"{job}.r{round_}.j{i}") for i, c in enumerate(step.calls)]
        return FlatChord(header, body_sig(key, "quorum.gen_round", job, progress, f"{job}.r{round_}"))
    if isinstance(step, FollowUp):
        suffix = "agg" if step.call.role == "aggregate" else "esc"
        follow = call_sig(key, spec, step.call, f"{job}.{suffix}")
        return chain(follow, hop_sig(key, "quorum.gen_finish", job, progress, f"{job}.f"))
    first = call_sig(key, spec, candidate_call(spec, step.index), candidate_id(job, step.index))
    return chain(first, hop_sig(key, "quorum.gen_step", job, progress, f"{job}.st{step.index}"))


def _carry_on(
    rt: Runtime, spec: GenerationSpec, progress: Progress, step: Step, by: str, hostname: str | None
) -> None:
    """Publish a final result (as ``by``), or send the canvas of the next step."""
    if not isinstance(step, Done):
        step_canvas(worker_key(app), spec, progress, step).apply_async()
        return
    result = step.result.model_dump(mode="json")
    attempts = progress.attempts + progress.extra
    count = rt.job_count(spec.job_id, attempts, kind="generate", strategy=spec.selector, outcome="ok")
    entry = cache_along(rt, spec, result)
    if publish_success(app, rt, spec.job_id, result, by=by, hostname=hostname, also=count, cache_entry=entry):
        log.info("job %s: %s chose %s", spec.job_id, spec.selector, step.result.chosen)


def _hop(task: Task, job_id: str, progress: dict[str, Any], advance: Any, body_id: str | None = None) -> None:
    """Run one hop: load the spec, ``advance(spec, progress)`` to the next step, carry on; a typed
    error ends the job with that error under the job id. ``body_id``: a chord body's id (it runs
    inline, without a request id of its own). It never raises: an unexpected error ends the job
    with a typed one (a chord body run inline that raised would leave the job unanswered)."""
    rt = runtime()
    by, hostname = f"gen:{task.request.id or body_id}", hostname_of(task)
    try:
        spec = load_spec(rt, GenerationSpec, job_id)
    except Ignore:
        return  # no spec (expired, or never stored): nothing to answer
    with ending_typed(app, rt, job_id, by=by, hostname=hostname, kind="generate", strategy=spec.selector):
        prog = Progress.model_validate(progress)
        _carry_on(rt, spec, prog, advance(spec, prog), by, hostname)


# --------------------------------------------------------------------------- public entry


@app.task(
    name="quorum.generate", bind=True, throws=(QuorumError,), Request="workers.requests:RedactedRequest"
)
def generate(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Public entry of a generation job; the producer's ``AsyncResult(job_id)`` is the answer."""
    rt = runtime()
    entry, spec = open_job(
        self, rt, args, kwargs,
        parse=parse_generation_request,
        # early stop sends one candidate at a time, without reading the breakers first
        providers=lambda r: candidate_providers(r, rt.settings) if r.quality_threshold is None else [],
        prepare=lambda r, e: prepare_generate(r, job_id=e.job_id, settings=rt.settings, fleet=e.fleet),
    )  # fmt: skip
    job_id = entry.job_id
    log.info("job %s: %s over %s", job_id, spec.selector, spec.labels())

    def start(rt: Runtime, spec: GenerationSpec) -> None:
        _start(rt, spec, entry.breakers, entry.read_at, self.request)

    return enter(rt, job_id, spec, entry.digest, cached=cached_result, start=start, stored=entry.stored)


def _start(
    rt: Runtime, spec: GenerationSpec, breakers: dict[str, BreakerSnapshot], read_at: float, request: Any
) -> None:
    """Send the candidates' chord, or the first early-stop candidate (one message: the entry's
    ``request`` is acked with it); ``breakers`` are the snapshots the entry read at ``read_at``
    with its other reads (any provider missing there is read now). A candidate read CLOSED
    carries the read's time (it may skip ``acquire``)."""
    key = worker_key(app)
    if spec.quality_threshold is not None:  # early stop: one candidate at a time
        first = step_canvas(key, spec, Progress(), NextCandidate(0))
        with ack_along.sending(request):
            first.apply_async()
        return
    now = time.time()
    reads = admission.BreakerReads(rt.breaker.states, breakers, read_at)
    # a provider the entry did not read: e.g. a redelivered entry whose stored spec names others
    snapshots = reads.ensure((c.provider for c in spec.candidates), now)
    progress, send = Progress(), []
    labels = spec.labels()
    for i, candidate in enumerate(spec.candidates):
        reason = rt.unavailable(candidate.provider, now, snapshots)
        if reason is None:
            send.append(i)
        else:
            progress.attempts.append(skipped_attempt(candidate, labels[i], reason))
    if len(send) < spec.min_responses:
        require_answers(spec, progress, now)  # raises InsufficientResponsesError
    job = spec.job_id
    header = [
        call_sig(
            key,
            spec,
            candidate_call(spec, i),
            candidate_id(job, i),
            reads.closed_at(spec.candidates[i].provider),
        )
        for i in send
    ]
    FlatChord(header, body_sig(key, "quorum.gen_select", job, progress, f"{job}.s")).apply_async()


# --------------------------------------------------------------------------- provider call


@app.task(name="quorum.gen_call", bind=True, base=InternalTask, throws=(QuorumError,))
def gen_call(
    self: Task, call: dict[str, Any], deadline: float, closed_at: float | None = None
) -> dict[str, Any]:
    """One free-text provider call (candidate, judge, aggregator or escalation); never raises:
    the outcome, good or bad, is returned so a chord or chain always moves on. ``closed_at``
    (a first candidate call's only): see :mod:`orchestration.breaker.admission`."""
    rt = runtime()
    planned = ProviderCall.model_validate(call)
    attempt = rt.attempt(
        planned.candidate,
        generation_invoke(planned),
        label=planned.label,
        task_id=self.request.id,
        deadline=deadline,
        post=rt.post_call(closed_at=closed_at),
    )
    attempt.worker = self.request.hostname
    return attempt.model_dump(mode="json")


# --------------------------------------------------------------------------- job hops


@app.task(name="quorum.gen_select", bind=True, base=InternalTask, throws=(QuorumError,))
def gen_select(self: Task, outcomes: list[dict[str, Any]], job_id: str, progress: dict[str, Any]) -> None:
    """Candidate chord body: score, select, or start judging / merging."""

    def advance(spec: GenerationSpec, prog: Progress) -> Step:
        prog.attempts += [Attempt.model_validate(o) for o in outcomes]
        return after_candidates(spec, prog)

    _hop(self, job_id, progress, advance, body_id=f"{job_id}.s")


@app.task(name="quorum.gen_round", bind=True, base=InternalTask, throws=(QuorumError,))
def gen_round(self: Task, verdicts: list[dict[str, Any]], job_id: str, progress: dict[str, Any]) -> None:
    """Judge chord body: apply a round's verdicts, then the next round or the end."""

    def advance(spec: GenerationSpec, prog: Progress) -> Step:
        return after_round(spec, prog, [Attempt.model_validate(v) for v in verdicts])

    _hop(self, job_id, progress, advance, body_id=f"{job_id}.r{len(progress.get('rounds') or [])}")


@app.task(name="quorum.gen_finish", bind=True, base=InternalTask, throws=(QuorumError,))
def gen_finish(self: Task, outcome: dict[str, Any], job_id: str, progress: dict[str, Any]) -> None:
    """Link after the aggregator or escalation call: the final answer."""
    _hop(self, job_id, progress, lambda s, p: after_call(s, p, Attempt.model_validate(outcome)))


@app.task(name="quorum.gen_step", bind=True, base=InternalTask, throws=(QuorumError,))
def gen_step(self: Task, outcome: dict[str, Any], job_id: str, progress: dict[str, Any]) -> None:
    """Early-stop link: stop once an answer is good enough, else ask the next candidate."""
    _hop(self, job_id, progress, lambda s, p: after_candidate(s, p, Attempt.model_validate(outcome)))
