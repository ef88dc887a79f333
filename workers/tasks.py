"""Celery tasks. Public API: ``quorum.extract`` (and, later, ``quorum.generate``); the rest are
the internal hops of a job. Task bodies stay thin: validation, planning, merging and
bookkeeping live in ``orchestration``; this module only moves messages."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery.utils.log import get_task_logger

from orchestration.errors import ProviderError, QuorumError, error_from_dict
from orchestration.jobs import JobSpec, build_result, parse_request, prepare_extract, single_answer
from orchestration.models import Attempt
from orchestration.state.jobs import claim_publication
from orchestration.strategies.failover import Fail, Send, next_step
from workers.app import app
from workers.canvas import MODE_FAILOVER, failover_attempt
from workers.runtime import Runtime, runtime

log: logging.Logger = get_task_logger("quorum.tasks")


# --------------------------------------------------------------------------- public entry


@app.task(name="quorum.extract", bind=True, throws=(QuorumError,))
def extract(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Public entry of an extraction job; the producer's ``AsyncResult(job_id)`` is the answer."""
    rt = runtime()
    request = parse_request(args, kwargs)
    spec = prepare_extract(request, job_id=self.request.id, settings=rt.settings, fleet=rt.fleet())
    log.info("job %s: %s over %s", spec.job_id, spec.strategy, [c.label() for c in spec.candidates])
    step = _plan(rt, spec, [], 0)
    if isinstance(step, Fail):
        raise step.error
    failover_attempt(
        app, spec, step.index, 0, [a.model_dump(mode="json") for a in step.skipped], countdown=step.countdown
    ).apply_async()
    raise Ignore()  # the job's result is written by its last hop, under this task's id


# --------------------------------------------------------------------------- provider call


@app.task(name="quorum.call", bind=True, throws=(QuorumError,))
def call(self: Task, spec: dict[str, Any], index: int, mode: str) -> dict[str, Any]:
    """One provider call. Failover mode raises the mapped error (the errback moves on);
    chord mode returns the error outcome so one failed provider never fails the chord."""
    rt = runtime()
    job = JobSpec.model_validate(spec)
    candidate = job.candidates[index]
    attempt = rt.attempt(job, candidate, task_id=self.request.id)
    attempt.worker = self.request.hostname
    if mode == MODE_FAILOVER and not attempt.ok:
        error = error_from_dict(attempt.error or {"type": "ProviderError"})
        error.details["attempt"] = attempt.model_dump(mode="json")
        raise error
    return attempt.model_dump(mode="json")


# --------------------------------------------------------------------------- failover hops


@app.task(name="quorum.finish", bind=True)
def finish(
    self: Task,
    attempt: dict[str, Any],
    spec: dict[str, Any],
    attempts: list[dict[str, Any]],
    index: int,
    hop: int,
) -> dict[str, Any]:
    """Link of a successful attempt; runs under the job id, so its return value is the answer."""
    rt = runtime()
    job = JobSpec.model_validate(spec)
    winner = Attempt.model_validate(attempt)
    history = [Attempt.model_validate(a) for a in attempts] + [winner]
    result = build_result(job, history, single_answer(winner), chosen=winner.label)
    if not claim_publication(rt.redis, rt.prefix, job.job_id, f"finish:{self.request.id}"):
        raise Ignore()  # a duplicate chain (redelivered hop) already answered this job
    return result.model_dump(mode="json")


@app.task(name="quorum.failover_next")
def failover_next(
    request: Any,
    exc: BaseException,
    traceback: Any,
    *,
    spec: dict[str, Any],
    attempts: list[dict[str, Any]],
    index: int,
    hop: int,
) -> None:
    """Errback of a failed attempt, run inline by the worker: send the next hop or end the job."""
    rt = runtime()
    job = JobSpec.model_validate(spec)
    try:
        history = [Attempt.model_validate(a) for a in attempts] + [_failed_attempt(job, index, request, exc)]
        step = _plan(rt, job, history, index + 1)
        history += step.skipped
        if isinstance(step, Send):
            failover_attempt(
                app,
                job,
                step.index,
                hop + 1,
                [a.model_dump(mode="json") for a in history],
                countdown=step.countdown,
            ).apply_async()
            return
        error = step.error
    except Exception as e:  # an errback that raises is only logged by Celery: never hang the job
        log.exception("job %s: failover hop failed", job.job_id)
        error = e if isinstance(e, QuorumError) else QuorumError(f"failover failed: {type(e).__name__}: {e}")
    _publish_failure(rt, job, error)


def _failed_attempt(job: JobSpec, index: int, request: Any, exc: BaseException) -> Attempt:
    if isinstance(exc, QuorumError) and isinstance(exc.details.get("attempt"), dict):
        return Attempt.model_validate(exc.details["attempt"])
    cand = job.candidates[index]  # e.g. WorkerLostError: the call never returned an outcome
    err = exc if isinstance(exc, QuorumError) else ProviderError(f"{type(exc).__name__}: {exc}")
    return Attempt(
        provider=cand.provider,
        label=cand.label(),
        params=cand.params,
        task_id=getattr(request, "id", None),
        error=err.to_dict(),
    )


def _plan(rt: Runtime, job: JobSpec, history: list[Attempt], start: int) -> Send | Fail:
    now = time.time()
    return next_step(job, history, start, now, lambda provider: rt.unavailable(provider, now))


def _publish_failure(rt: Runtime, job: JobSpec, error: BaseException) -> None:
    if claim_publication(rt.redis, rt.prefix, job.job_id, "failover:failed"):
        log.warning("job %s failed: %s", job.job_id, error)
        app.backend.mark_as_failure(job.job_id, error)
