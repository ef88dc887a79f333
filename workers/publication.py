"""A job's life under its id: the entry task claims the id and stores the spec; whichever task
ends the job (a provider call, a chord body, a failover errback) publishes the answer under the
job id behind the publication guard and tells Flower with a task event for that id.

Only the entry task (``quorum.extract`` / ``quorum.generate``) ever runs under the job id, so
Flower names the job after it; its final state reaches Flower as the ``task-succeeded`` or
``task-failed`` event the publisher sends for the job id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, NoReturn, TypeVar

from celery import Celery, Task, states
from celery.exceptions import Ignore
from pydantic import BaseModel

from orchestration.breaker import BreakerSnapshot
from orchestration.errors import QuorumError
from orchestration.state import FleetSetting, cache
from orchestration.state import job_records as jobs
from orchestration.state.cache import CacheEntry
from orchestration.state.fleet import queue_read_fleet
from orchestration.state.scripts import Queued, execute_queued, queued_all
from workers.events import send_job_event
from workers.job_errors import REDIS_DOWN, as_job_error, store_error
from workers.previews import preview
from workers.runtime import Runtime

log = logging.getLogger("quorum.publication")

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")
S = TypeVar("S")

#: How much of a result Flower shows (Celery's own default for ``task-succeeded``).
RESULT_REPR_MAX = 1024


@dataclass(frozen=True)
class Entry:
    """What a public entry task reads before it plans its job, in one round trip: its job id and
    request digest (the id checked free), the fleet setting and the breakers of the providers
    the job may call, read at ``read_at`` or just after (the time the round trip was sent)."""

    job_id: str
    digest: str
    fleet: FleetSetting
    breakers: dict[str, BreakerSnapshot]
    read_at: float = 0.0
    #: The spec store's outcome (:func:`store_spec`'s) when it rode with these reads.
    stored: tuple[Any, dict[str, Any] | None, bool] | None = None


class LastFleet:
    """The fleet setting this process read last: an entry prepares its spec on it and stores the
    spec with its reads, one round trip; the fleet setting read there confirms it (a changed one
    costs that entry one more round trip, to store the spec prepared on it)."""

    value: FleetSetting | None = None


_last_fleet = LastFleet()


def open_entry(task: Task, rt: Runtime, args: Any, kwargs: Any, providers: Sequence[str] = ()) -> Entry:
    """Check the job id of a public entry task, and read the fleet setting and the breakers of
    ``providers`` in the same pipelined round trip; ``Ignore`` (nothing stored) when the id
    cannot name a job, or when it names another request's job."""
    job_id = task.request.id
    if not jobs.valid_job_id(job_id):
        log.error("refused %s[%r]: not a valid job id (1-128 of A-Z a-z 0-9 _ -)", task.name, job_id)
        raise Ignore()
    digest = jobs.request_digest(args, kwargs)
    read_at = time.time()
    reads = [
        jobs.queue_held_by_other(rt.prefix, job_id, digest),
        queue_read_fleet(rt.prefix),
        rt.breaker.queue_states(providers, read_at),
    ]
    held, fleet, breakers = execute_queued(rt.redis, reads)
    if held:
        _taken(task, job_id)
    _last_fleet.value = fleet
    return Entry(job_id, digest, fleet, breakers, read_at)


def open_job(
    task: Task,
    rt: Runtime,
    args: Any,
    kwargs: Any,
    *,
    parse: Callable[[Any, Any], R],
    providers: Callable[[R], Sequence[str]],
    prepare: Callable[[R, Entry], S],
) -> tuple[Entry, S]:
    """A public entry task's opening, the same for every job kind: parse the request, check its
    job id with the reads of the providers it may call (:func:`open_entry`), then prepare its
    spec. A request that does not parse or prepare is refused (:func:`refuse`) only once the id
    is known to be this request's: a forged id must not fail another request's job."""
    request: R | None = None
    invalid: QuorumError | None = None
    try:
        request = parse(args, kwargs)
    except QuorumError as e:
        invalid = e
    if request is not None and (opened := _open_in_one(task, rt, args, kwargs, request, providers, prepare)):
        return opened
    entry = open_entry(task, rt, args, kwargs, providers(request) if request is not None else ())
    try:
        if invalid is not None:
            raise invalid
        assert request is not None
        return entry, prepare(request, entry)
    except QuorumError as e:
        refuse(rt, entry.job_id, e)


def _open_in_one(
    task: Task,
    rt: Runtime,
    args: Any,
    kwargs: Any,
    request: R,
    providers: Callable[[R], Sequence[str]],
    prepare: Callable[[R, Entry], S],
) -> tuple[Entry, S] | None:
    """:func:`open_job` and the spec store in one round trip, for a request prepared on the fleet
    setting this process read last: the spec is stored only if the id is free (``SET NX GET``: a
    spec of another request is left alone and the task refused, as on the checked path), and the
    fleet setting, the breakers, whether the job was answered and the cached answer are read
    with it. None (the caller takes the checked path) when no fleet setting was read yet, the id
    is not a job id, or the request does not prepare: its refusal waits for the id's check."""
    guess, job_id = _last_fleet.value, task.request.id
    if guess is None or not jobs.valid_job_id(job_id):
        return None
    digest, read_at = jobs.request_digest(args, kwargs), time.time()
    try:
        spec: Any = prepare(request, Entry(job_id, digest, guess, {}, read_at))
    except QuorumError:
        return None
    key = _cache_key(rt, spec)
    ttl = jobs.spec_ttl_s(spec.deadline, read_at)
    steps: list[Queued[Any]] = [
        jobs.queue_store_spec(rt.prefix, job_id, digest, spec.model_dump_json(), ttl),
        jobs.queue_published(rt.prefix, job_id),
        queue_read_fleet(rt.prefix),
        rt.breaker.queue_states(providers(request), read_at),
    ]
    if key is not None:
        steps.append(cache.queue_lookup(rt.prefix, key))
    try:
        held, published, fleet, breakers, *looked = execute_queued(rt.redis, steps, raise_on_error=False)
    except KeyError:
        _taken(task, job_id)
    for value in (held, published, fleet, breakers):
        if isinstance(value, Exception):
            raise value
    fresh = held is None
    if fresh and published:  # answered long ago (its spec expired): this spec must not stay
        execute_queued(rt.redis, [jobs.queue_drop_spec(rt.prefix, job_id)])
        _taken(task, job_id)
    _last_fleet.value = fleet
    entry = Entry(job_id, digest, fleet, breakers, read_at)
    hit = _hit(looked)
    if not fresh:
        return replace(entry, stored=(type(spec).model_validate_json(held), hit, False)), spec
    if fleet != guess:  # set-strategy ran since this process last read it: prepare on the new one
        try:
            spec = prepare(request, entry)
        except QuorumError as e:
            execute_queued(rt.redis, [jobs.queue_drop_spec(rt.prefix, job_id)])  # no task reads it
            refuse(rt, job_id, e)
        key = _cache_key(rt, spec)
        redo = [jobs.queue_replace_spec(rt.prefix, job_id, digest, spec.model_dump_json(), ttl)]
        if key is not None:  # the first lookup was for the other spec (counted as a miss too)
            redo.append(cache.queue_lookup(rt.prefix, key))
        _, *looked = execute_queued(rt.redis, redo, raise_on_error=False)
        hit = _hit(looked)
    return replace(entry, stored=(spec, hit, True)), spec


def _taken(task: Task, job_id: str) -> NoReturn:
    """Refuse an entry whose job id another request holds: logged, nothing stored."""
    log.error("refused %s[%s]: the job id is already used by another request", task.name, job_id)
    raise Ignore()


def _hit(looked: list[Any]) -> dict[str, Any] | None:
    """The cached answer among a round trip's replies after its spec store (None: a miss, no
    lookup, or a lookup that failed: the job then runs)."""
    return looked[0] if looked and not isinstance(looked[0], Exception) else None


def _cache_key(rt: Runtime, spec: Any) -> str | None:
    """Where the job's answer is cached, or None when the job or the fleet does not cache."""
    if spec.use_cache and rt.settings.orchestration.cache_ttl_s > 0:
        return str(spec.cache_key(rt.prefix, rt.settings))
    return None


def refuse(rt: Runtime, job_id: str, error: QuorumError) -> NoReturn:
    """Fail a job at its entry: raise ``error`` (Celery stores it under the job id) unless the job
    was answered already, in which case nothing is stored."""
    if jobs.claim_publication(rt.redis, rt.prefix, job_id, "entry", rt.settings.result_expires_s):
        raise error
    log.info("job %s: answered already; this run of its entry stores nothing (%s)", job_id, error)
    raise Ignore()


def claim(rt: Runtime, job_id: str, by: str) -> bool:
    """Take the job's publication guard (kept as long as its result)."""
    return jobs.claim_publication(rt.redis, rt.prefix, job_id, by, rt.settings.result_expires_s)


class SpecCache:
    """Parsed job specs of this process, by job id, each kept until its Redis copy expires: a
    spec is stored once and never changes, so the tasks of a job that run here parse it once
    (no Redis read, no re-validation). Bounded: the oldest entries go first."""

    def __init__(self, max_entries: int = 2048) -> None:
        self._max = max_entries
        self._specs: dict[str, tuple[float, BaseModel]] = {}
        self._lock = threading.Lock()

    def get(self, model: type[M], job_id: str, now: float) -> M | None:
        """The cached spec of ``job_id`` if it is a ``model`` and has not expired."""
        entry = self._specs.get(job_id)
        if entry is None or entry[0] <= now or not isinstance(entry[1], model):
            return None
        return entry[1]

    def put(self, job_id: str, spec: BaseModel, expires: float, now: float) -> None:
        """Keep ``spec`` until ``expires`` (epoch seconds)."""
        with self._lock:
            if len(self._specs) >= self._max:
                for key in [k for k, (exp, _) in self._specs.items() if exp <= now]:
                    del self._specs[key]
                while len(self._specs) >= self._max:  # insertion order: the oldest first
                    del self._specs[next(iter(self._specs))]
            self._specs[job_id] = (expires, spec)


_specs = SpecCache()


def _spec_expiry(spec: BaseModel) -> float:
    return float(spec.deadline) + jobs.SPEC_MARGIN_S  # type: ignore[attr-defined]


def store_spec(
    rt: Runtime, spec: M, digest: str, cache_key: str | None = None
) -> tuple[M, dict[str, Any] | None, bool]:
    """Store the job's spec once (TTL: its deadline plus a margin) and, with ``cache_key``, look
    its answer up in the result cache, in one round trip. Returns the spec, the cached answer
    (None on a miss, or when the cache cannot say) and whether this run stored the spec. A
    redelivered entry gets the spec stored the first time (same deadline); another request with
    this id is ignored."""
    job_id: str = spec.job_id  # type: ignore[attr-defined]
    ttl = jobs.spec_ttl_s(spec.deadline, time.time())  # type: ignore[attr-defined]
    steps: list[Queued[Any]] = [jobs.queue_store_spec(rt.prefix, job_id, digest, spec.model_dump_json(), ttl)]
    if cache_key is not None:
        steps.append(cache.queue_lookup(rt.prefix, cache_key))
    try:
        held, *looked = execute_queued(rt.redis, steps, raise_on_error=False)
    except KeyError:
        log.error("refused job %s: the job id is already used by another request", job_id)
        raise Ignore() from None
    if isinstance(held, Exception):
        raise held
    hit = _hit(looked)
    if held is None:
        return spec, hit, True
    return type(spec).model_validate_json(held), hit, False


def enter(
    rt: Runtime,
    job_id: str,
    spec: M,
    digest: str,
    *,
    cached: Callable[[dict[str, Any], M], dict[str, Any]],
    start: Callable[[Runtime, M], None],
    stored: tuple[M, dict[str, Any] | None, bool] | None = None,
) -> dict[str, Any]:
    """The tail of a public entry, whatever the job's kind: store the spec and look the answer up
    in the cache (one round trip; none when they rode with the entry's reads: ``stored``). A hit
    is claimed, counted and the spec this run stored dropped (one more); ``cached`` re-issues it
    for this job. Otherwise ``start`` the job, whose last task publishes the answer under the job
    id (``Ignore`` here); a typed error on the way fails the job, and so does a send that Redis
    did not take within the workers' outage grace (as ``RedisUnavailableError``, once: some of
    the job's tasks may have gone out)."""
    spec, hit, fresh = stored if stored is not None else store_spec(rt, spec, digest, _cache_key(rt, spec))
    if hit is not None:
        steps: list[Queued[Any]] = [claim_along(rt, job_id, "cache"), cache.queue_count_hit(rt.prefix)]
        if fresh:
            steps.append(jobs.queue_drop_spec(rt.prefix, job_id))
        claimed, *_ = execute_queued(rt.redis, steps, raise_on_error=False)
        if isinstance(claimed, Exception):
            raise claimed
        if not claimed:
            log.info("job %s: answered already; its cached answer is not stored again", job_id)
            raise Ignore()
        return cached(hit, spec)
    _specs.put(job_id, spec, _spec_expiry(spec), time.time())
    try:
        start(rt, spec)
    except QuorumError as e:
        refuse(rt, job_id, e)
    except REDIS_DOWN as e:
        refuse(rt, job_id, as_job_error(e, job_id))
    raise Ignore()


def load_spec(rt: Runtime, model: type[M], job_id: str) -> M:
    """The job's spec (parsed once per process); ``Ignore`` when it is gone (the job ended long ago)."""
    now = time.time()
    cached = _specs.get(model, job_id, now)
    if cached is not None:
        return cached
    raw = jobs.load_spec(rt.redis, rt.prefix, job_id)
    if raw is None:
        log.warning("job %s: its spec expired; the task is dropped", job_id)
        raise Ignore()
    spec = model.model_validate_json(raw)
    _specs.put(job_id, spec, _spec_expiry(spec), now)
    return spec


@contextmanager
def ending_typed(
    app: Celery,
    rt: Runtime,
    job_id: str,
    *,
    by: str,
    hostname: str | None,
    kind: str = "extract",
    strategy: str | None = None,
) -> Iterator[None]:
    """Run a step that must not raise (a chord body Celery runs inline, where a raised error would
    leave the job unanswered): whatever it raises ends the job with a typed error, a Quorum error
    as raised, anything else logged and mapped by ``as_job_error``."""
    try:
        yield
    except Exception as e:
        if not isinstance(e, QuorumError):
            log.exception("job %s: %s failed unexpectedly", job_id, by)
        error = as_job_error(e, job_id)
        publish_failure(app, rt, job_id, error, by=by, hostname=hostname, kind=kind, strategy=strategy)


def _event(app: Celery, hostname: str | None, type_: str, job_id: str, **fields: Any) -> None:
    """A task event for the job id, as the entry task would have sent it (Flower reads these);
    batched with this worker's task events."""
    try:
        send_job_event(app, hostname, type_, job_id, **fields)
    except Exception:  # monitoring only: the answer is stored already
        log.warning("job %s: could not send %s", job_id, type_, exc_info=True)


def claim_along(rt: Runtime, job_id: str, by: str) -> Queued[bool]:
    """:func:`claim` as a command that rides in another step's round trip (e.g. a provider
    call's post-call records); safe to repeat (the same publisher claims again)."""
    return jobs.queue_claim_publication(rt.prefix, job_id, by, rt.settings.result_expires_s)


def cache_along(rt: Runtime, spec: Any, result: dict[str, Any]) -> CacheEntry | None:
    """The job's answer for the result cache, written with the answer by its publisher only
    (``publish_success(..., cache_entry=...)``); None when the job or the fleet does not cache."""
    key = _cache_key(rt, spec)
    return cache.entry(key, result, rt.settings.orchestration.cache_ttl_s) if key else None


def publish_success(
    app: Celery,
    rt: Runtime,
    job_id: str,
    result: dict[str, Any],
    *,
    by: str,
    hostname: str | None,
    claimed: bool | None = None,
    also: Queued[Any] | None = None,
    cache_entry: CacheEntry | None = None,
) -> bool:
    """Store the job's answer under its id (first publisher only); True when this one did.
    ``claimed``: the guard's answer when the caller took it already (:func:`claim_along`);
    ``also``: a write to the state Redis made with the answer (the job's count: safe to repeat);
    ``cache_entry``: the answer's cache entry, written only by the run that stores the answer. Where
    the result backend is the state's server (the default), the guard, the answer and the rest
    take one round trip (:func:`publish_along`); with two servers, the guard one, the answer one,
    and ``also`` and the entry follow on the state Redis."""
    if (
        claimed is None
        and (stored := _publish_in_one(app, rt, job_id, result, by, also, cache_entry)) is not None
    ):
        if stored:
            announce_success(app, hostname, job_id, result)
        return stored
    if not (claim(rt, job_id, by) if claimed is None else claimed):
        return False
    after = queued_all(also, cache_entry.queued() if cache_entry else None)
    app.backend.store_result(job_id, result, states.SUCCESS, also=after if rt.state_on_backend else None)
    if after is not None and not rt.state_on_backend:
        _state_write(rt, job_id, after)
    announce_success(app, hostname, job_id, result)
    return True


def _publish_in_one(
    app: Celery,
    rt: Runtime,
    job_id: str,
    result: dict[str, Any],
    by: str,
    also: Queued[Any] | None,
    cache_entry: CacheEntry | None,
) -> bool | None:
    """:func:`publish_along` sent on its own: whether the guard is ``by``'s (the answer then
    stored); None when the backend is another server, or when the round trip failed: the caller
    then publishes step by step, each step with its own retries (all are safe to repeat)."""
    along = publish_along(app, rt, job_id, result, by=by, also=also, cache_entry=cache_entry)
    if along is None:
        return None
    try:
        (stored,) = execute_queued(rt.redis, [along], raise_on_error=False)
    except Exception as e:
        stored = e
    if isinstance(stored, bool):
        return stored
    log.warning("job %s: publishing in one round trip failed (%s); publishing step by step", job_id, stored)
    return None


def publish_along(
    app: Celery,
    rt: Runtime,
    job_id: str,
    result: dict[str, Any],
    *,
    by: str,
    also: Queued[Any] | None = None,
    cache_entry: CacheEntry | None = None,
) -> Queued[bool] | None:
    """:func:`publish_success` as one step for the round trip of the state's records (a call's
    post-call records): one script claims the guard and, when it is ``by``'s, stores the answer
    and its cache entry; ``also`` rides behind it. True when the guard is ``by``'s (then
    :func:`announce_success`). None when the result backend is not the state's server: the
    caller claims with the records and publishes after.

    ``also`` is sent whoever holds the guard: it must be safe to repeat and to send in vain (the
    job's count is taken once per job id; a run that loses the guard is one of two runs of a
    job racing after a crash)."""
    if not rt.state_on_backend:
        return None
    guard = jobs.publication_guard(rt.prefix, job_id, rt.settings.result_expires_s)
    store = app.backend.queue_store_guarded(job_id, result, guard, by, cache_entry)
    if also is None:
        return store
    both = queued_all(store, also)
    assert both is not None
    return Queued(both.queue, lambda replies: both.parse(replies)[0], both.scripts)


def announce_success(app: Celery, hostname: str | None, job_id: str, result: dict[str, Any]) -> None:
    """The job's ``task-succeeded`` event, once its answer is stored (Flower shows the job done)."""
    runtime = float(result.get("latency_ms") or 0.0) / 1000
    _event(app, hostname, "task-succeeded", job_id, result=preview(result, RESULT_REPR_MAX), runtime=runtime)


def _state_write(rt: Runtime, job_id: str, write: Queued[Any]) -> None:
    """``write`` on the state Redis; a failure is logged, as when it rides with the answer (the
    answer is stored already)."""
    try:
        execute_queued(rt.redis, [write])
    except Exception:
        log.warning("job %s: a record after the answer failed", job_id, exc_info=True)


def publish_failure(
    app: Celery,
    rt: Runtime,
    job_id: str,
    error: BaseException,
    *,
    by: str,
    hostname: str | None,
    kind: str = "extract",
    strategy: str | None = None,
) -> bool:
    """Store the job's typed error under its id, its error payload beside it, and count the job
    (first publisher only); True when this one did."""
    if not claim(rt, job_id, by):
        return False
    log.warning("job %s failed: %s", job_id, error)
    rt.record_failed_job(job_id, error, kind=kind, strategy=strategy)
    store_error(app.backend, job_id, error)
    app.backend.mark_as_failure(job_id, error)
    _event(app, hostname, "task-failed", job_id, exception=preview(error, RESULT_REPR_MAX), traceback="")
    return True
