"""Per-job keys, all derived from the job id on the worker (no message names a key): the job's
spec (stored once, read by every task of the job), the publication guard (a job's result is
published once, even when a task is redelivered, early quorum races the chord body, or a
producer re-sends a used job id) and the answers gathered so far by a chord's header tasks."""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from typing import Any, Literal, overload

from orchestration.models import Attempt
from orchestration.state.scripts import Queued, ScriptCall, execute_queued, script_queued

#: How long per-job coordination keys live at least; longer than any deadline.
JOB_KEY_TTL_S = 3600
#: How long a job's spec outlives its deadline (retry countdowns, a slow last hop, redelivery).
SPEC_MARGIN_S = 300
#: A job id (the entry task's id, chosen by the producer): UUID-like, no ``.`` (internal task ids
#: are ``<job>.h1``, ``<job>.c0``...), no braces (hash tags), bounded.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # no "." (internal ids) or ":" (`<id>:error`)


def valid_job_id(job_id: object) -> bool:
    """True when ``job_id`` may name a job (and so the keys derived from it)."""
    return isinstance(job_id, str) and JOB_ID.fullmatch(job_id) is not None


def _key(prefix: str, job_id: str, what: str) -> str:
    if not valid_job_id(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return f"{prefix}job:{{{job_id}}}:{what}"


def spec_key(prefix: str, job_id: str) -> str:
    """``{prefix}job:{<job id>}:spec`` — the job's validated spec (text, schema, candidates)."""
    return _key(prefix, job_id, "spec")


def request_digest(args: Any, kwargs: Any) -> str:
    """A digest of a producer's arguments: tells a redelivered entry from another request."""
    raw = json.dumps([args, kwargs], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _packed(digest: str, spec: str) -> bytes:
    """A spec as stored: its request's digest, a newline, the spec's JSON compressed."""
    return digest.encode() + b"\n" + zlib.compress(spec.encode("utf-8", "surrogatepass"), 1)


def _record(raw: bytes) -> tuple[str, str]:
    """``(digest, spec JSON)`` of a stored spec record (``<digest>\n<zlib of the spec JSON>``)."""
    digest, _, packed = raw.partition(b"\n")
    return digest.decode(), zlib.decompress(packed).decode("utf-8", "surrogatepass")


def store_spec(redis: Any, prefix: str, job_id: str, digest: str, spec: str, ttl_s: int) -> str | None:
    """Store a job's spec (JSON, compressed: it is most of a job's bytes in Redis) once; return
    the spec already stored under this id by the same request (a redelivered entry), or raise
    ``KeyError`` when another request holds the id. ``redis`` must return bytes (no
    ``decode_responses``), like the workers' state client."""
    (held,) = execute_queued(redis, [queue_store_spec(prefix, job_id, digest, spec, ttl_s)])
    return held  # type: ignore[no-any-return]


def queue_store_spec(prefix: str, job_id: str, digest: str, spec: str, ttl_s: int) -> Queued[str | None]:
    """:func:`store_spec` as one command for a round trip shared with other steps (the entry's
    cache lookup); its result raises ``KeyError`` as :func:`store_spec` does."""
    key = spec_key(prefix, job_id)
    record = _packed(digest, spec)

    def queue(pipe: Any) -> int:
        pipe.set(key, record, nx=True, ex=max(ttl_s, 1), get=True)
        return 1

    def parse(replies: list[Any]) -> str | None:
        old = replies[0]
        if old is None:
            return None
        held, stored = _record(old)
        if held != digest:
            raise KeyError(job_id)
        return stored

    return Queued(queue, parse)


def queue_replace_spec(prefix: str, job_id: str, digest: str, spec: str, ttl_s: int) -> Queued[None]:
    """Replace the spec this run of the entry stored (prepared on a fleet setting that changed
    before it was stored; no task has read it yet), as a step for a shared round trip."""
    key = spec_key(prefix, job_id)
    record = _packed(digest, spec)

    def queue(pipe: Any) -> int:
        pipe.set(key, record, xx=True, ex=max(ttl_s, 1))
        return 1

    return Queued(queue, lambda replies: None)


def queue_published(prefix: str, job_id: str) -> Queued[bool]:
    """Whether the job's answer was published (its guard taken), as a read for a shared round trip."""
    key = _key(prefix, job_id, "published")

    def queue(pipe: Any) -> int:
        pipe.exists(key)
        return 1

    return Queued(queue, lambda replies: bool(replies[0]))


def queue_drop_spec(prefix: str, job_id: str) -> Queued[None]:
    """Delete a job's spec: an entry answered from the cache needs none (it sends no task)."""
    key = spec_key(prefix, job_id)

    def queue(pipe: Any) -> int:
        pipe.delete(key)
        return 1

    return Queued(queue, lambda replies: None)


def held_by_other(redis: Any, prefix: str, job_id: str, digest: str) -> bool:
    """True when this job id is already used by a different request (or already answered);
    one round trip (both keys carry the job's hash tag)."""
    check = queue_held_by_other(prefix, job_id, digest)
    return check.parse([redis.mget(_job_check_keys(prefix, job_id))])


def _job_check_keys(prefix: str, job_id: str) -> list[str]:
    return [spec_key(prefix, job_id), _key(prefix, job_id, "published")]


def queue_held_by_other(prefix: str, job_id: str, digest: str) -> Queued[bool]:
    """:func:`held_by_other` as one command for a round trip shared with the entry's other reads."""
    keys = _job_check_keys(prefix, job_id)

    def queue(pipe: Any) -> int:
        pipe.mget(keys)
        return 1

    def parse(replies: list[Any]) -> bool:
        raw, published = replies[0]
        if raw is not None:
            return _record(raw)[0] != digest
        return published is not None

    return Queued(queue, parse)


def spec_ttl_s(deadline: float, now: float) -> int:
    """How long a job's spec is kept: until its deadline plus :data:`SPEC_MARGIN_S`. What a run
    of the job's tasks marks as done need not outlive it (with the spec gone, no task runs)."""
    return int(deadline - now) + SPEC_MARGIN_S


def load_spec(redis: Any, prefix: str, job_id: str) -> str | None:
    """A job's spec (JSON), or None once it expired."""
    raw = redis.get(spec_key(prefix, job_id))
    return None if raw is None else _record(raw)[1]


def claim_publication(redis: Any, prefix: str, job_id: str, by: str, ttl_s: int = JOB_KEY_TTL_S) -> bool:
    """True for the first publisher, and again for that same publisher when its task is
    redelivered (so a crash between claiming and writing cannot lose the result). Keep the
    claim as long as the result (``ttl_s``): a re-sent job id must not overwrite it."""
    key, ttl = publication_guard(prefix, job_id, ttl_s)
    old = redis.set(key, by, nx=True, ex=ttl, get=True)
    return _claimed(old, by)


def _claimed(old: bytes | str | None, by: str) -> bool:
    """Whether a claim whose ``SET NX GET`` returned ``old`` belongs to ``by``."""
    if isinstance(old, bytes):
        old = old.decode()
    return old is None or old == by


def publication_guard(prefix: str, job_id: str, ttl_s: int = JOB_KEY_TTL_S) -> tuple[str, int]:
    """The key and TTL of a job's publication guard, for a script that claims it together with
    another write (e.g. the answer's, where the result backend is the state's server)."""
    return _key(prefix, job_id, "published"), max(ttl_s, JOB_KEY_TTL_S)


def queue_claim_publication(prefix: str, job_id: str, by: str, ttl_s: int = JOB_KEY_TTL_S) -> Queued[bool]:
    """:func:`claim_publication` as one command for a round trip shared with other steps (it is
    safe to repeat: the same publisher claims again)."""
    key, ttl = publication_guard(prefix, job_id, ttl_s)

    def queue(pipe: Any) -> int:
        pipe.set(key, by, nx=True, ex=ttl, get=True)
        return 1

    def parse(replies: list[Any]) -> bool:
        return _claimed(replies[0], by)

    return Queued(queue, parse)


def published_by(redis: Any, prefix: str, job_id: str) -> str | None:
    """Who published the job's result (``early``, ``body``, ``call``...), or None."""
    raw = redis.get(_key(prefix, job_id, "published"))
    return raw.decode() if isinstance(raw, bytes) else raw


@overload
def add_answer(redis: Any, prefix: str, job_id: str, attempt: Attempt) -> list[Attempt]: ...


@overload
def add_answer(
    redis: Any, prefix: str, job_id: str, attempt: Attempt, *, with_publisher: Literal[True]
) -> tuple[list[Attempt], str | None]: ...


def add_answer(
    redis: Any, prefix: str, job_id: str, attempt: Attempt, *, with_publisher: bool = False
) -> list[Attempt] | tuple[list[Attempt], str | None]:
    """Record one header task's outcome; return every outcome recorded so far (atomically), and
    with ``with_publisher`` who published the job's result (:func:`published_by`), read in the
    same step (all keys carry the job's hash tag)."""
    answers, by = execute_queued(redis, [queue_add_answer(prefix, job_id, attempt)])[0]
    return (answers.attempts, by) if with_publisher else answers.attempts


def queue_add_answer(
    prefix: str, job_id: str, attempt: Attempt, ttl_s: int = JOB_KEY_TTL_S
) -> Queued[tuple[Answers, str | None]]:
    """:func:`add_answer` (with the publisher) as one script for a round trip shared with other
    steps (e.g. a chord call's post-call records); safe to repeat (the outcomes are deduplicated
    by task id). The outcomes are kept ``ttl_s`` (a worker passes its results' expiry: the late
    calls of a job answered early are listed here only), and at least :data:`JOB_KEY_TTL_S`."""
    keys = [_key(prefix, job_id, "answers"), _key(prefix, job_id, "published")]
    ttl = max(JOB_KEY_TTL_S, ttl_s)
    call = script_queued([ScriptCall("answer.lua", keys, [attempt.model_dump_json(), ttl])])

    def parse(replies: list[Any]) -> tuple[Answers, str | None]:
        items, by = call.parse(replies)[0]
        return Answers(items), by.decode() if isinstance(by, bytes) else by

    return Queued(call.queue, parse, call.scripts)


class Answers:
    """A job's outcomes recorded so far, parsed on first use: most chord calls only need how
    many were recorded (too few for a quorum yet, or all in), not the outcomes themselves."""

    def __init__(self, raw: list[bytes]) -> None:
        self._raw = raw
        self._attempts: list[Attempt] | None = None

    @property
    def recorded(self) -> int:
        """Outcomes recorded, a redelivered task's twice: an upper bound on :attr:`attempts`."""
        return len(self._raw)

    @property
    def attempts(self) -> list[Attempt]:
        """One outcome per task id, oldest first (parsed once)."""
        if self._attempts is None:
            self._attempts = _dedupe([Attempt.model_validate_json(item) for item in self._raw])
        return self._attempts


def _dedupe(attempts: list[Attempt]) -> list[Attempt]:
    """One outcome per task id (a redelivered header task records twice): keep the last."""
    by_id: dict[str, Attempt] = {}
    for a in attempts:
        by_id[a.task_id or a.label] = a
    return list(by_id.values())
