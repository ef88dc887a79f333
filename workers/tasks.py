"""Celery tasks. Public API: ``quorum.extract`` (and, later, ``quorum.generate``); the rest are
the internal hops of a job. Task bodies stay thin: validation, planning, merging and
bookkeeping live in ``orchestration``; this module only moves messages."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, states
from celery.exceptions import Ignore
from celery.signals import worker_init, worker_ready
from celery.utils.log import get_task_logger

from orchestration.attempts import extraction
from orchestration.errors import ProviderError, QuorumError, error_from_dict
from orchestration.jobs import (
    JobSpec,
    build_result,
    cached_result,
    parse_request,
    prepare_extract,
    single_answer,
)
from orchestration.models import Attempt
from orchestration.providers.registry import preload
from orchestration.state import cache
from orchestration.state.accuracy import read_weights
from orchestration.state.accuracy import record as record_accuracy
from orchestration.state.jobs import add_answer, claim_publication, published_by
from orchestration.strategies.consensus import accuracy_updates, responses_from_attempts
from orchestration.strategies.extraction import chord_labels, early_answer_ready, early_pending, merge_answer
from orchestration.strategies.failover import Fail, Send, next_step, skipped_attempt
from workers.app import app
from workers.canvas import MODE_CHORD, MODE_FAILOVER, consensus_chord, failover_attempt
from workers.job_errors import store_error
from workers.runtime import Runtime, runtime

log: logging.Logger = get_task_logger("quorum.tasks")


@worker_init.connect
def _preload_sdks(**_: Any) -> None:
    """Import the enabled providers' SDKs before the pool starts (prefork children inherit them)."""
    settings = app.conf.quorum_settings
    preload({settings.providers[name].kind for name in settings.enabled_providers()})


@worker_ready.connect
def _warm_up(**_: Any) -> None:
    """Build the runtime and every enabled provider's SDK client before the first job arrives."""
    rt = runtime()
    for name in rt.settings.enabled_providers():
        try:
            rt.providers.get(name)
        except QuorumError as e:
            log.warning("provider %s unavailable on this worker: %s", name, e)


# --------------------------------------------------------------------------- public entry


@app.task(name="quorum.extract", bind=True, throws=(QuorumError,), Request="workers.requests:RedactedRequest")
def extract(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Public entry of an extraction job; the producer's ``AsyncResult(job_id)`` is the answer."""
    rt = runtime()
    request = parse_request(args, kwargs)
    spec = prepare_extract(request, job_id=self.request.id, settings=rt.settings, fleet=rt.fleet())
    log.info("job %s: %s over %s", spec.job_id, spec.strategy, [c.label() for c in spec.candidates])
    if spec.use_cache and rt.settings.orchestration.cache_ttl_s > 0:
        spec.cache_key = cache.cache_key(rt.prefix, spec.kind, spec.text, *spec.cache_material())
        hit = cache.lookup(rt.redis, rt.prefix, spec.cache_key)
        if hit is not None:
            return cached_result(hit, spec)
    if spec.strategy != "failover":
        return self.replace(_chord(rt, spec))
    step = _plan(rt, spec, [], 0)
    if isinstance(step, Fail):
        raise step.error
    failover_attempt(
        app, spec, step.index, 0, [a.model_dump(mode="json") for a in step.skipped], countdown=step.countdown
    ).apply_async()
    raise Ignore()  # the job's result is written by its last hop, under this task's id


def _chord(rt: Runtime, spec: JobSpec) -> Any:
    """The consensus/best-match chord over the candidates worth sending (open breakers dropped)."""
    now = time.time()
    labels = chord_labels(spec.candidates)
    send, skipped = [], []
    for i, candidate in enumerate(spec.candidates):
        reason = rt.unavailable(candidate.provider, now)
        if reason is None:
            send.append(i)
        else:
            skipped.append(skipped_attempt(candidate, labels[i], reason))
    if len(send) < spec.min_responses:
        merge_answer(spec, skipped, accuracy={}, priors={})  # raises InsufficientResponsesError
    return consensus_chord(app, spec, send, [a.model_dump(mode="json") for a in skipped])


# --------------------------------------------------------------------------- provider call


@app.task(name="quorum.call", bind=True, throws=(QuorumError,))
def call(
    self: Task, spec: dict[str, Any], index: int, mode: str, skipped: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """One provider call. Failover mode raises the mapped error (the errback moves on);
    chord mode returns the error outcome so one failed provider never fails the chord."""
    rt = runtime()
    job = JobSpec.model_validate(spec)
    skipped = skipped or []
    candidate = job.candidates[index]
    label = candidate.label() if mode == MODE_FAILOVER else chord_labels(job.candidates)[index]
    attempt = rt.attempt(
        candidate,
        extraction(job.text, job.json_schema, candidate),
        label=label,
        task_id=self.request.id,
        deadline=job.deadline,
    )
    attempt.worker = self.request.hostname
    if mode == MODE_FAILOVER and not attempt.ok:
        error = error_from_dict(attempt.error or {"type": "ProviderError"})
        error.details["attempt"] = attempt.model_dump(mode="json")
        raise error
    if mode == MODE_CHORD and job.strategy == "consensus" and job.early_quorum:
        _maybe_publish_early(rt, job, attempt, skipped)
    return attempt.model_dump(mode="json")


def _maybe_publish_early(rt: Runtime, job: JobSpec, attempt: Attempt, skipped: list[dict[str, Any]]) -> None:
    """Early quorum: publish the job's answer as soon as the outstanding answers cannot change it."""
    try:
        so_far = add_answer(rt.redis, rt.prefix, job.job_id, attempt)
        if not early_pending(job, so_far):
            return  # too few answers yet, or all in: no weights to read
        accuracy, priors = _weights(rt, job)
        if not early_answer_ready(job, so_far, accuracy=accuracy, priors=priors):
            return
        if published_by(rt.redis, rt.prefix, job.job_id):
            return
        history = [Attempt.model_validate(a) for a in skipped] + so_far
        fields, chosen = merge_answer(job, history, accuracy=accuracy, priors=priors)
        result = build_result(job, history, fields, chosen=chosen, early=True)
        if claim_publication(rt.redis, rt.prefix, job.job_id, "early"):
            app.backend.store_result(job.job_id, result.model_dump(mode="json"), states.SUCCESS)
            _cache_store(rt, job, result.model_dump(mode="json"))
            log.info("job %s: early quorum after %d answers", job.job_id, len(so_far))
    except Exception:  # early quorum is an optimisation: the chord body still answers
        log.warning("job %s: early quorum check failed", job.job_id, exc_info=True)


def _weights(rt: Runtime, job: JobSpec) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    providers = sorted({c.provider for c in job.candidates})
    accuracy = read_weights(rt.fast_redis, rt.prefix, providers, job.fields)
    return accuracy, {p: rt.settings.providers[p].weight for p in providers}


@app.task(name="quorum.merge", bind=True, throws=(QuorumError,))
def merge(
    self: Task, outcomes: list[dict[str, Any]], spec: dict[str, Any], skipped: list[dict[str, Any]]
) -> dict[str, Any]:
    """Chord body, running under the job id: merge or select, grade the providers, publish."""
    rt = runtime()
    job = JobSpec.model_validate(spec)
    history = [Attempt.model_validate(a) for a in skipped] + [Attempt.model_validate(o) for o in outcomes]
    accuracy, priors = _weights(rt, job)
    fields, chosen = merge_answer(job, history, accuracy=accuracy, priors=priors)
    result = build_result(job, history, fields, chosen=chosen)
    if job.strategy == "consensus":
        responses = responses_from_attempts([a for a in history if a.ok])
        record_accuracy(rt.fast_redis, rt.prefix, accuracy_updates(responses, fields), once=job.job_id)
    rt.record_job(job.job_id, history, strategy=job.strategy)
    _cache_store(rt, job, result.model_dump(mode="json"))
    if not claim_publication(rt.redis, rt.prefix, job.job_id, f"body:{self.request.id}"):
        raise Ignore()  # published early: the late answers only updated health, cost and accuracy
    return result.model_dump(mode="json")


def _cache_store(rt: Runtime, job: JobSpec, result: dict[str, Any]) -> None:
    if job.cache_key:
        cache.store(rt.redis, job.cache_key, result, rt.settings.orchestration.cache_ttl_s)


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
    rt.record_job(job.job_id, history, strategy=job.strategy)
    _cache_store(rt, job, result.model_dump(mode="json"))
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
        rt.record_failed_job(job.job_id, error, strategy=job.strategy)
        store_error(app.backend, job.job_id, error)
        app.backend.mark_as_failure(job.job_id, error)
