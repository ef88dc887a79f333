"""Celery tasks of generation jobs. Public API: ``quorum.generate``; the rest are its hops.

Who holds the job id: every hop that may end the job runs *under the job id* and hands it on
with ``Task.replace``, which freezes the replacing canvas with the current task's id, so the
*last* task of each new canvas inherits it:

- ``quorum.generate`` → ``chord(quorum.gen_call × candidates, quorum.gen_select)``;
- ``quorum.gen_select`` (tournament) → ``chord(quorum.gen_call × judges, quorum.gen_round)``,
  and each ``gen_round`` replaces itself with the next round's chord until one answer is left;
- ``gen_select`` (hybrid merge, escalation) → ``chain(quorum.gen_call, quorum.gen_finish)``;
- early stop: ``quorum.generate`` → ``chain(gen_call(c0), quorum.gen_step)``, and each step
  replaces itself with ``chain(gen_call(next), gen_step)`` or goes on as ``gen_select`` would.

A replaced task raises ``Ignore`` (no state is stored, and ``task_track_started`` is off), so
``AsyncResult(job_id)`` only ever sees the final task's value, or the typed error it raised.
Provider-call tasks never raise (they return :class:`Attempt` outcomes), so one failed
candidate or judge never fails a chord. Bodies stay thin: the steps live in
``orchestration.generation_steps``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, chain, chord, signature
from celery.canvas import Signature
from celery.exceptions import Ignore
from celery.utils.log import get_task_logger

from orchestration.errors import QuorumError
from orchestration.generation_jobs import (
    GenerationSpec,
    Progress,
    ProviderCall,
    cached_generation,
    candidate_call,
    generation_invoke,
    parse_generation_request,
    prepare_generate,
)
from orchestration.generation_steps import (
    Done,
    FollowUp,
    JudgeRound,
    NextCandidate,
    Step,
    after_call,
    after_candidate,
    after_candidates,
    after_round,
    require_answers,
)
from orchestration.models import Attempt
from orchestration.state import cache
from orchestration.state.jobs import claim_publication
from orchestration.strategies.failover import skipped_attempt
from workers.app import app
from workers.canvas import candidate_id
from workers.runtime import Runtime, runtime

log: logging.Logger = get_task_logger("quorum.generation")


# --------------------------------------------------------------------------- signatures


def call_sig(spec: GenerationSpec, call: ProviderCall, task_id: str) -> Signature:
    """One provider call of the job (texts travel in the args, Flower shows only labels)."""
    return signature(
        "quorum.gen_call",
        args=(call.model_dump(mode="json"), spec.deadline),
        app=app,
        task_id=task_id,
        argsrepr=f"({spec.job_id!r}, {call.role}, {call.label!r})",
        kwargsrepr="{}",
    )


def hop_sig(name: str, spec: GenerationSpec, progress: Progress) -> Signature:
    """A step of the job that may end it (its id becomes the job id through ``Task.replace``)."""
    return signature(
        name,
        kwargs={"spec": spec.model_dump(mode="json"), "progress": progress.model_dump(mode="json")},
        app=app,
        argsrepr=f"({spec.job_id!r},)",
        kwargsrepr="{}",
    )


def step_canvas(spec: GenerationSpec, progress: Progress, step: JudgeRound | FollowUp | NextCandidate) -> Any:
    """The canvas that carries a job on from ``step`` (its last task takes over the job id)."""
    job = spec.job_id
    if isinstance(step, JudgeRound):
        round_ = len(progress.rounds)
        header = [call_sig(spec, c, f"{job}.r{round_}.j{i}") for i, c in enumerate(step.calls)]
        return chord(header, hop_sig("quorum.gen_round", spec, progress))
    if isinstance(step, FollowUp):
        suffix = "agg" if step.call.role == "aggregate" else "esc"
        follow = call_sig(spec, step.call, f"{job}.{suffix}")
        return chain(follow, hop_sig("quorum.gen_finish", spec, progress))
    first = call_sig(spec, candidate_call(spec, step.index), candidate_id(job, step.index))
    return chain(first, hop_sig("quorum.gen_step", spec, progress))


def _carry_on(task: Task, rt: Runtime, spec: GenerationSpec, progress: Progress, step: Step) -> Any:
    """Publish a final result, or replace ``task`` with the canvas of the next step."""
    if not isinstance(step, Done):
        return task.replace(step_canvas(spec, progress, step))
    result = step.result.model_dump(mode="json")
    if spec.cache_key:
        cache.store(rt.redis, spec.cache_key, result, rt.settings.orchestration.cache_ttl_s)
    if not claim_publication(rt.redis, rt.prefix, spec.job_id, "generate"):  # marks it published
        raise Ignore()
    rt.record_job(spec.job_id, progress.attempts + progress.extra, kind="generate", strategy=spec.selector)
    log.info("job %s: %s chose %s", spec.job_id, spec.selector, step.result.chosen)
    return result


# --------------------------------------------------------------------------- public entry


@app.task(
    name="quorum.generate", bind=True, throws=(QuorumError,), Request="workers.requests:RedactedRequest"
)
def generate(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Public entry of a generation job; the producer's ``AsyncResult(job_id)`` is the answer."""
    rt = runtime()
    request = parse_generation_request(args, kwargs)
    spec = prepare_generate(request, job_id=self.request.id, settings=rt.settings, fleet=rt.fleet())
    log.info("job %s: %s over %s", spec.job_id, spec.selector, spec.labels())
    if spec.use_cache and rt.settings.orchestration.cache_ttl_s > 0:
        material = spec.cache_material()
        candidates = [c.model_dump(mode="json") for c in spec.candidates]
        spec.cache_key = cache.cache_key(
            rt.prefix, spec.kind, spec.prompt, material, spec.selector, candidates
        )
        hit = cache.lookup(rt.redis, rt.prefix, spec.cache_key)
        if hit is not None:
            return cached_generation(hit, spec)
    if spec.quality_threshold is not None:  # early stop: one candidate at a time
        return self.replace(step_canvas(spec, Progress(), NextCandidate(0)))
    now = time.time()
    progress, send = Progress(), []
    labels = spec.labels()
    for i, candidate in enumerate(spec.candidates):
        reason = rt.unavailable(candidate.provider, now)
        if reason is None:
            send.append(i)
        else:
            progress.attempts.append(skipped_attempt(candidate, labels[i], reason))
    if len(send) < spec.min_responses:
        require_answers(spec, progress, now)  # raises InsufficientResponsesError
    header = [call_sig(spec, candidate_call(spec, i), candidate_id(spec.job_id, i)) for i in send]
    return self.replace(chord(header, hop_sig("quorum.gen_select", spec, progress)))


# --------------------------------------------------------------------------- provider call


@app.task(name="quorum.gen_call", bind=True, throws=(QuorumError,))
def gen_call(self: Task, call: dict[str, Any], deadline: float) -> dict[str, Any]:
    """One free-text provider call (candidate, judge, aggregator or escalation); never raises:
    the outcome, good or bad, is returned so a chord or chain always moves on."""
    rt = runtime()
    planned = ProviderCall.model_validate(call)
    attempt = rt.attempt(
        planned.candidate,
        generation_invoke(planned),
        label=planned.label,
        task_id=self.request.id,
        deadline=deadline,
    )
    attempt.worker = self.request.hostname
    return attempt.model_dump(mode="json")


# --------------------------------------------------------------------------- job hops


def _load(spec: dict[str, Any], progress: dict[str, Any]) -> tuple[GenerationSpec, Progress]:
    return GenerationSpec.model_validate(spec), Progress.model_validate(progress)


@app.task(name="quorum.gen_select", bind=True, throws=(QuorumError,))
def gen_select(
    self: Task, outcomes: list[dict[str, Any]], spec: dict[str, Any], progress: dict[str, Any]
) -> dict[str, Any]:
    """Candidate chord body (under the job id): score, select, or start judging / merging."""
    rt = runtime()
    job, prog = _load(spec, progress)
    prog.attempts += [Attempt.model_validate(o) for o in outcomes]
    return _carry_on(self, rt, job, prog, after_candidates(job, prog))


@app.task(name="quorum.gen_round", bind=True, throws=(QuorumError,))
def gen_round(
    self: Task, verdicts: list[dict[str, Any]], spec: dict[str, Any], progress: dict[str, Any]
) -> dict[str, Any]:
    """Judge chord body (under the job id): apply a round's verdicts, then the next round or the end."""
    rt = runtime()
    job, prog = _load(spec, progress)
    step = after_round(job, prog, [Attempt.model_validate(v) for v in verdicts])
    return _carry_on(self, rt, job, prog, step)


@app.task(name="quorum.gen_finish", bind=True, throws=(QuorumError,))
def gen_finish(
    self: Task, outcome: dict[str, Any], spec: dict[str, Any], progress: dict[str, Any]
) -> dict[str, Any]:
    """Link after the aggregator or escalation call (under the job id): the final answer."""
    rt = runtime()
    job, prog = _load(spec, progress)
    return _carry_on(self, rt, job, prog, after_call(job, prog, Attempt.model_validate(outcome)))


@app.task(name="quorum.gen_step", bind=True, throws=(QuorumError,))
def gen_step(
    self: Task, outcome: dict[str, Any], spec: dict[str, Any], progress: dict[str, Any]
) -> dict[str, Any]:
    """Early-stop link (under the job id): stop once an answer is good enough, else ask the next."""
    rt = runtime()
    job, prog = _load(spec, progress)
    return _carry_on(self, rt, job, prog, after_candidate(job, prog, Attempt.model_validate(outcome)))
