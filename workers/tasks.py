"""Celery tasks. Public API: ``quorum.extract``; ``quorum.call``, the ``quorum.merge`` chord
body and the ``quorum.failover_next`` errback are internal (signed by the sending worker, refused
unsigned); the last two run inline, in the worker of the call that ends their step.
Task bodies stay thin: validation, planning, merging and bookkeeping live in ``orchestration``;
this module only moves messages. A job's spec lives in Redis; messages carry the job id."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery.signals import worker_init, worker_ready
from celery.utils.log import get_task_logger

from orchestration.attempts import extraction
from orchestration.breaker import BreakerSnapshot, admission
from orchestration.candidates import candidate_providers, chord_labels
from orchestration.errors import ProviderError, QuorumError, error_from_dict
from orchestration.extraction import (
    ExtractionSpec,
    Fail,
    Send,
    accuracy_updates,
    build_result,
    cached_result,
    early_answer_ready,
    early_pending,
    merge_answer,
    next_step,
    parse_request,
    prepare_extract,
    responses_from_attempts,
    single_answer,
    skipped_attempt,
)
from orchestration.models import Attempt
from orchestration.providers import preload
from orchestration.state import RecentWeights
from orchestration.state.accuracy import queue_grades
from orchestration.state.job_records import JOB_KEY_TTL_S, queue_add_answer, spec_ttl_s
from orchestration.state.scripts import Queued, execute_queued, queued_all
from workers import ack_along, gc_tuning
from workers.app import app
from workers.canvas import MODE_FAILOVER, consensus_chord, failover_attempt, merge_id
from workers.events import BufferTaskEvents
from workers.job_errors import as_job_error
from workers.publication import (
    announce_success,
    cache_along,
    claim_along,
    ending_typed,
    enter,
    load_spec,
    open_job,
    publish_along,
    publish_failure,
    publish_success,
)
from workers.requests import InternalTask, hostname_of
from workers.runtime import PostCall, Runtime, runtime
from workers.signing import RequireFleetSecret, worker_key

log: logging.Logger = get_task_logger("quorum.tasks")

app.steps["worker"].add(RequireFleetSecret)
app.steps["consumer"].add(BufferTaskEvents)


@worker_init.connect
def _preload_sdks(**_: Any) -> None:
    """Import the enabled providers' SDKs before the pool starts, then freeze what is imported out
    of the garbage collector's way (prefork children inherit both)."""
    settings = app.conf.quorum_settings
    preload({settings.providers[name].kind for name in settings.enabled_providers()})
    gc_tuning.tune()


@worker_ready.connect
def _warm_up(**_: Any) -> None:
    """Build the runtime and every enabled provider's SDK client before the first job arrives,
    then freeze what start-up built out of the garbage collector's way (``workers.gc_tuning``)."""
    rt = runtime()
    for name in rt.settings.enabled_providers():
        try:
            rt.providers.get(name)
        except QuorumError as e:
            log.warning("provider %s unavailable on this worker: %s", name, e)
    frozen = gc_tuning.tune()
    log.info("garbage collector: %d start-up objects frozen, young collections every %d allocations",
             frozen, gc.get_threshold()[0])  # fmt: skip


# --------------------------------------------------------------------------- public entry


@app.task(name="quorum.extract", bind=True, throws=(QuorumError,), Request="workers.requests:RedactedRequest")
def extract(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Public entry of an extraction job; the producer's ``AsyncResult(job_id)`` is the answer.

    Only this task runs under the job id. It stores the spec and sends the first provider
    call(s); the task that ends the job publishes the answer under the job id."""
    rt = runtime()
    entry, spec = open_job(
        self, rt, args, kwargs,
        parse=parse_request,
        providers=lambda r: candidate_providers(r, rt.settings, failover=r.strategy == "failover"),
        prepare=lambda r, e: prepare_extract(r, job_id=e.job_id, settings=rt.settings, fleet=e.fleet),
    )  # fmt: skip
    job_id = entry.job_id
    log.info("job %s: %s over %s", job_id, spec.strategy, [c.label() for c in spec.candidates])

    def start(rt: Runtime, spec: ExtractionSpec) -> None:
        _start(rt, spec, entry.breakers, entry.read_at, self.request)

    return enter(rt, job_id, spec, entry.digest, cached=cached_result, start=start, stored=entry.stored)


def _start(
    rt: Runtime, spec: ExtractionSpec, breakers: dict[str, BreakerSnapshot], read_at: float, request: Any
) -> None:
    """Send the first failover hop (the entry's ``request`` acked with it), or the chord over the
    candidates worth sending; ``breakers`` are the snapshots the entry read at ``read_at`` with
    its other reads (a provider missing there is read when planning needs it: a failover hop's
    one by one, a chord's together). Each call sent on a snapshot read CLOSED carries the time of
    that read (it may then start without acquiring its breaker: :mod:`orchestration.breaker.admission`)."""
    key = worker_key(app)
    if spec.strategy == "failover":
        step, closed = _plan(rt, spec, [], 0, breakers, read_at)
        if isinstance(step, Fail):
            raise step.error
        skipped = [a.model_dump(mode="json") for a in step.skipped]
        label = spec.candidates[step.index].label()
        hop = failover_attempt(
            app, key, spec.job_id, step.index, label, 0, skipped, step.countdown, closed_at=closed
        )
        with ack_along.sending(request):
            hop.apply_async()
        return
    now = time.time()
    reads = admission.BreakerReads(rt.breaker.states, breakers, read_at)
    # a provider the entry did not read: e.g. a redelivered entry whose stored spec names others
    snapshots = reads.ensure((c.provider for c in spec.candidates), now)
    labels = chord_labels(spec.candidates)
    send, skipped = [], []
    closed_by_index: dict[int, float | None] = {}
    for i, candidate in enumerate(spec.candidates):
        reason = rt.unavailable(candidate.provider, now, snapshots)
        if reason is None:
            send.append((i, labels[i]))
            closed_by_index[i] = reads.closed_at(candidate.provider)
        else:
            skipped.append(skipped_attempt(candidate, labels[i], reason))
    if len(send) < spec.min_responses:
        merge_answer(spec, skipped, accuracy={}, priors={})  # raises InsufficientResponsesError
    dumped = [a.model_dump(mode="json") for a in skipped]
    consensus_chord(app, key, spec.job_id, send, dumped, closed_at=closed_by_index).apply_async()


# --------------------------------------------------------------------------- provider call


@app.task(name="quorum.call", bind=True, base=InternalTask, throws=(QuorumError,))
def call(
    self: Task,
    job_id: str,
    index: int,
    mode: str,
    hop: int = 0,
    attempts: list[dict[str, Any]] | None = None,
    skipped: list[dict[str, Any]] | None = None,
    closed_at: float | None = None,
) -> dict[str, Any]:
    """One provider call. Failover mode publishes the job's answer on success and raises the
    mapped error on failure (the errback moves on); chord mode returns the outcome, good or
    bad, so one failed provider never fails the chord. ``closed_at`` (signed, set by the entry
    for the first calls only): when the entry read this provider's breaker CLOSED; a fresh one
    lets the call start without acquiring the breaker."""
    rt = runtime()
    job = load_spec(rt, ExtractionSpec, job_id)
    candidate = job.candidates[index]
    label = candidate.label() if mode == MODE_FAILOVER else chord_labels(job.candidates)[index]
    early = mode != MODE_FAILOVER and job.strategy == "consensus" and job.early_quorum
    # A failover hop's post-call records wait for its answer (or its publication guard), an
    # early-quorum chord call's for its answer, a chord call's for its chord count (where the
    # result backend is the state's server): one round trip for all.
    counts = mode != MODE_FAILOVER and rt.state_on_backend and bool(self.request.chord)
    post = rt.post_call(defer=mode == MODE_FAILOVER or early or counts, closed_at=closed_at)
    try:
        attempt = rt.attempt(
            candidate,
            extraction(job.text, job.json_schema, candidate),
            label=label,
            task_id=self.request.id,
            deadline=job.deadline,
            post=post,
        )
        attempt.worker = self.request.hostname
        if mode == MODE_FAILOVER:
            if not attempt.ok:
                error = error_from_dict(attempt.error or {"type": "ProviderError"})
                error.attempt = attempt.model_dump(mode="json")
                raise error
            history = [Attempt.model_validate(a) for a in attempts or []] + [attempt]
            _finish(rt, job, history, self.request, post)
            return attempt.model_dump(mode="json")
        outcome = attempt.model_dump(mode="json")
        count = app.backend.queue_chord_part(self.request, outcome) if counts else None
        if early:
            _maybe_publish_early(rt, job, attempt, skipped or [], self.request.hostname, post, count)
        elif count is not None:
            post.flush(count)  # not sent (the breaker degraded): Celery's tracer counts the call
        return outcome
    finally:
        post.flush()  # the records go out whatever happened (nothing left once flushed)


def _finish(rt: Runtime, job: ExtractionSpec, history: list[Attempt], request: Any, post: PostCall) -> None:
    """A failover hop succeeded: publish its answer under the job id (once), count the job, cache
    the answer. With the result backend on the state's server (the default) all of it rides with
    the call's post-call records, one round trip, and so does the call's ack when the broker is
    that server too (``workers.ack_along``: only once the answer is stored); else the guard rides
    with them and the answer, count and cache entry follow in one more. A hop whose guard another
    run holds stores nothing."""
    winner = history[-1]
    result = build_result(job, history, single_answer(winner), chosen=winner.label).model_dump(mode="json")
    by = f"call:{request.id}"
    count, entry = rt.job_count(job.job_id, history, strategy=job.strategy), cache_along(rt, job, result)
    acked = None  # the ack rides behind the answer's store: both on the broker's server only
    if rt.broker_on_state and rt.state_on_backend:
        acked = ack_along.if_answered(request, app.backend.get_key_for_task(job.job_id))
    also = queued_all(count, acked)
    along = publish_along(app, rt, job.job_id, result, by=by, also=also, cache_entry=entry)
    ran = post.flush(along or claim_along(rt, job.job_id, by))
    if along is not None and ran and isinstance(ran[0], bool):
        if ran[0]:
            announce_success(app, request.hostname, job.job_id, result)
        return
    if along is not None:
        ran = []  # the answer did not ride with the records: publish it on its own
    publish_success(
        app,
        rt,
        job.job_id,
        result,
        by=by,
        hostname=request.hostname,
        claimed=ran[0] if ran else None,  # None: the records went without it; claim on its own
        also=count,
        cache_entry=entry,
    )


def _maybe_publish_early(
    rt: Runtime,
    job: ExtractionSpec,
    attempt: Attempt,
    skipped: list[dict[str, Any]],
    hostname: str | None,
    post: PostCall,
    count: Queued[Any] | None = None,
) -> None:
    """Early quorum: publish the job's answer as soon as the outstanding answers cannot change it.
    The call's answer (and its chord ``count``, when given) rides with its post-call records (one
    round trip), or goes alone when they went without it (e.g. the breaker degraded; Celery's
    tracer then counts the call)."""
    try:
        step = queue_add_answer(rt.prefix, job.job_id, attempt, ttl_s=rt.settings.result_expires_s)
        ran = post.flush(step if count is None else queued_all(step, count))
        if ran and count is not None:
            ran = [ran[0][0]]
        answers, published = ran[0] if ran else execute_queued(rt.redis, [step])[0]
        if published is not None:
            return  # answered already: nothing to merge early
        if not job.min_responses <= answers.recorded < len(job.candidates):
            return  # too few answers yet, or (counted before parsing) all in: the body answers
        so_far = answers.attempts
        if not early_pending(job, so_far):
            return  # too few answers yet, or all in: no weights to read
        accuracy, priors = _weights(rt, job)
        if not early_answer_ready(job, so_far, accuracy=accuracy, priors=priors):
            return
        history = [Attempt.model_validate(a) for a in skipped] + so_far
        fields, chosen = merge_answer(job, history, accuracy=accuracy, priors=priors)
        result = build_result(job, history, fields, chosen=chosen, early=True).model_dump(mode="json")
        entry = cache_along(rt, job, result)
        if publish_success(app, rt, job.job_id, result, by="early", hostname=hostname, cache_entry=entry):
            log.info("job %s: early quorum after %d answers", job.job_id, len(so_far))
    except Exception:  # early quorum is an optimisation: the chord body still answers
        log.warning("job %s: early quorum check failed", job.job_id, exc_info=True)


#: This process's consensus weights, each read at most once a second (RecentWeights).
_recent_weights = RecentWeights()


def _weights(rt: Runtime, job: ExtractionSpec) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    providers = sorted({c.provider for c in job.candidates})
    accuracy = _recent_weights.read(rt.fast_redis, rt.prefix, providers, job.fields, time.monotonic())
    return accuracy, {p: rt.settings.providers[p].weight for p in providers}


@app.task(name="quorum.merge", bind=True, base=InternalTask, throws=(QuorumError,))
def merge(self: Task, outcomes: list[dict[str, Any]], job_id: str, skipped: list[dict[str, Any]]) -> None:
    """Chord body, run by the worker whose call completed the chord (``InlineBody``): merge or
    select, grade the providers, publish under the job id. It never raises: an unexpected error
    ends the job with a typed one (a raising body would leave the job unanswered)."""
    rt = runtime()
    hostname = hostname_of(self)
    by = f"body:{merge_id(job_id)}"
    try:
        job = load_spec(rt, ExtractionSpec, job_id)
    except Ignore:
        return  # no spec (expired, or never stored): nothing to answer
    with ending_typed(app, rt, job_id, by=by, hostname=hostname, strategy=job.strategy):
        _merge(rt, job, outcomes, skipped, by, hostname)


def _merge(
    rt: Runtime,
    job: ExtractionSpec,
    outcomes: list[dict[str, Any]],
    skipped: list[dict[str, Any]],
    by: str,
    hostname: str | None,
) -> None:
    """Merge or select over every outcome, then publish the answer, or (published early) only
    grade the providers: the grades need the merge of all the answers, the answer does not."""
    job_id = job.job_id
    history = [Attempt.model_validate(a) for a in skipped] + [Attempt.model_validate(o) for o in outcomes]
    accuracy, priors = _weights(rt, job)
    try:
        fields, chosen = merge_answer(job, history, accuracy=accuracy, priors=priors)
    except QuorumError as e:
        publish_failure(app, rt, job_id, e, by=by, hostname=hostname, strategy=job.strategy)
        return
    # One round trip for the guard, the job's count and the grades (each provider's once per
    # job, by a marker its script takes: the grades need the merge of all the answers, the
    # answer does not, so they go even when the job was answered early).
    steps: list[Queued[Any]] = [
        claim_along(rt, job_id, by),
        rt.job_count(job_id, history, strategy=job.strategy),
    ]
    if job.strategy == "consensus":
        responses = responses_from_attempts([a for a in history if a.ok])
        ttl = max(JOB_KEY_TTL_S, spec_ttl_s(job.deadline, time.time()))
        grades = queue_grades(rt.prefix, accuracy_updates(responses, fields), once=job_id, once_ttl_s=ttl)
        if grades is not None:
            steps.append(grades)
    claimed, *records = execute_queued(rt.redis, steps, raise_on_error=False)
    for value in records:
        if isinstance(value, Exception):
            log.warning("job %s: a record of the chord body failed: %s", job_id, value)
    if isinstance(claimed, Exception):
        claimed = None  # claim on its own (and raise there)
    if claimed is not False:  # answered early (or by an earlier run): no answer to build or cache
        result = build_result(job, history, fields, chosen=chosen).model_dump(mode="json")
        entry = cache_along(rt, job, result)
        publish_success(app, rt, job_id, result, by=by, hostname=hostname, claimed=claimed, cache_entry=entry)


# --------------------------------------------------------------------------- failover hops


@app.task(name="quorum.failover_next", base=InternalTask)
def failover_next(
    request: Any,
    exc: BaseException,
    traceback: Any,
    *,
    job_id: str,
    index: int,
    hop: int,
    attempts: list[dict[str, Any]],
) -> None:
    """Errback of a failed attempt, run inline by the worker: send the next hop or end the job."""
    rt = runtime()
    hostname = getattr(request, "hostname", None)
    try:
        job = load_spec(rt, ExtractionSpec, job_id)
    except Ignore:
        return
    try:
        history = [Attempt.model_validate(a) for a in attempts] + [_failed_attempt(job, index, request, exc)]
        step, closed = _plan(rt, job, history, index + 1)
        history += step.skipped
        if isinstance(step, Send):
            label = job.candidates[step.index].label()
            dumped = [a.model_dump(mode="json") for a in history]
            next_hop = failover_attempt(
                app, worker_key(app), job_id, step.index, label, hop + 1, dumped, step.countdown,
                closed_at=closed,
            )  # fmt: skip
            with ack_along.sending(request):  # the failed call's message goes with its next hop
                next_hop.apply_async()
            return
        error = step.error
    except Exception as e:  # an errback that raises is only logged by Celery: never hang the job
        log.exception("job %s: failover hop failed", job_id)
        error = as_job_error(e, job_id)
    publish_failure(app, rt, job_id, error, by="failover:failed", hostname=hostname, strategy=job.strategy)


def _failed_attempt(job: ExtractionSpec, index: int, request: Any, exc: BaseException) -> Attempt:
    if isinstance(exc, QuorumError) and isinstance(exc.attempt, dict):
        return Attempt.model_validate(exc.attempt)
    cand = job.candidates[index]  # e.g. WorkerLostError: the call never returned an outcome
    err = exc if isinstance(exc, QuorumError) else ProviderError(f"{type(exc).__name__}: {exc}")
    return Attempt(
        provider=cand.provider,
        label=cand.label(),
        params=cand.params,
        task_id=getattr(request, "id", None),
        error=err.to_dict(),
    )


def _plan(
    rt: Runtime,
    job: ExtractionSpec,
    history: list[Attempt],
    start: int,
    breakers: Mapping[str, BreakerSnapshot] | None = None,
    read_at: float | None = None,
) -> tuple[Send | Fail, float | None]:
    """The next failover step from candidate ``start`` on, and when the breaker of the candidate
    it sends to was read CLOSED (None: its call acquires). ``breakers``: snapshots read at
    ``read_at`` already; any other breaker planning needs is read here, one at a time, and its
    snapshot serves the hop's admission too (no second read by the call)."""
    now = time.time()
    reads = admission.BreakerReads(rt.breaker.states, breakers or {}, now if read_at is None else read_at)

    def unavailable(provider: str) -> str | None:
        return rt.unavailable(provider, now, reads.ensure([provider], now))

    step = next_step(job, history, start, now, unavailable)
    if isinstance(step, Fail):
        return step, None
    return step, reads.closed_at(job.candidates[step.index].provider)
