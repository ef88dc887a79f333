"""Canvas builders: the signatures that make up a job (attempts, failover hops, chords).

Task ids inside a job are derived from the job id (``<job>.h<hop>``, ``<job>.c<i>``), so a
redelivered task re-sends the same ids: its attempts are recognised by the cost ledger and the
publication guard instead of being counted or answered twice.
"""

from __future__ import annotations

import hashlib
from typing import Any

from celery import Celery, chord, signature
from celery.canvas import Signature

from orchestration.jobs import JobSpec

MODE_FAILOVER = "failover"
MODE_CHORD = "chord"


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


def _call(
    app: Celery,
    spec: JobSpec,
    index: int,
    mode: str,
    task_id: str,
    skipped: list[dict[str, Any]] | None = None,
) -> Signature:
    label = spec.candidates[index].label()
    return signature(
        "quorum.call",
        args=(spec.model_dump(mode="json"), index, mode, skipped or []),
        app=app,
        task_id=task_id,
        argsrepr=f"({spec.job_id!r}, {label!r}, {mode})",
        kwargsrepr="{}",
        # A failover hop hands its outcome to its link or errback directly: storing it as well
        # would cost every hop two more Redis round trips for a result nobody reads.
        ignore_result=mode == MODE_FAILOVER,
    )


def failover_attempt(
    app: Celery, spec: JobSpec, index: int, hop: int, attempts: list[dict[str, Any]], countdown: float = 0
) -> Signature:
    """Attempt ``hop`` (candidate ``index``): success finishes the job, failure runs the next hop."""
    sig = _call(app, spec, index, MODE_FAILOVER, hop_id(spec.job_id, hop))
    state = {"spec": spec.model_dump(mode="json"), "attempts": attempts, "index": index, "hop": hop}
    sig.link(
        signature(
            "quorum.finish",
            kwargs=state,
            app=app,
            task_id=spec.job_id,
            argsrepr=f"({spec.job_id!r},)",
            kwargsrepr="{}",
        )
    )
    sig.link_error(signature("quorum.failover_next", kwargs=state, app=app))
    if countdown > 0:
        sig.set(countdown=countdown)
    return sig


def consensus_chord(
    app: Celery, spec: JobSpec, indices: list[int], skipped: list[dict[str, Any]]
) -> Signature:
    """A chord: one provider call per candidate, then the merge (the job id goes to the body)."""
    header = [_call(app, spec, i, MODE_CHORD, candidate_id(spec.job_id, i), skipped) for i in indices]
    body = signature(
        "quorum.merge",
        kwargs={"spec": spec.model_dump(mode="json"), "skipped": skipped},
        app=app,
        argsrepr=f"({spec.job_id!r},)",
        kwargsrepr="{}",
    )
    return chord(header, body)
