"""Per-job coordination keys: the publication guard (a job's result is published once, even
when a task is redelivered or early quorum races the chord body) and the answers gathered so
far by a chord's header tasks."""

from __future__ import annotations

from typing import Any

from orchestration.models import Attempt

#: How long per-job keys live; longer than any deadline.
JOB_KEY_TTL_S = 3600


def _key(prefix: str, job_id: str, what: str) -> str:
    return f"{prefix}job:{{{job_id}}}:{what}"


def claim_publication(redis: Any, prefix: str, job_id: str, by: str) -> bool:
    """True for the first publisher, and again for that same publisher when its task is
    redelivered (so a crash between claiming and writing cannot lose the result)."""
    old = redis.set(_key(prefix, job_id, "published"), by, nx=True, ex=JOB_KEY_TTL_S, get=True)
    if isinstance(old, bytes):
        old = old.decode()
    return old is None or old == by


def published_by(redis: Any, prefix: str, job_id: str) -> str | None:
    """Who published the job's result (``early``, ``body``, ``finish``...), or None."""
    raw = redis.get(_key(prefix, job_id, "published"))
    return raw.decode() if isinstance(raw, bytes) else raw


def add_answer(redis: Any, prefix: str, job_id: str, attempt: Attempt) -> list[Attempt]:
    """Record one header task's outcome; return every outcome recorded so far (atomically)."""
    key = _key(prefix, job_id, "answers")
    pipe = redis.pipeline(transaction=True)
    pipe.rpush(key, attempt.model_dump_json())
    pipe.expire(key, JOB_KEY_TTL_S)
    pipe.lrange(key, 0, -1)
    *_, raw = pipe.execute()
    return _dedupe([Attempt.model_validate_json(item) for item in raw])


def _dedupe(attempts: list[Attempt]) -> list[Attempt]:
    """One outcome per task id (a redelivered header task records twice): keep the last."""
    by_id: dict[str, Attempt] = {}
    for a in attempts:
        by_id[a.task_id or a.label] = a
    return list(by_id.values())
