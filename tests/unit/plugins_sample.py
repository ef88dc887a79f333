"""Sample scorer plug-ins, resolved by dotted path in tests/unit/test_scoring.py."""

from __future__ import annotations

from orchestration.scoring import ScoringContext, scorer


@scorer
def mentions_task(text: str, ctx: ScoringContext) -> float:
    """1.0 when the answer mentions the task's first word (a toy scorer for plug-in tests)."""
    first = ctx.task.split()[0].casefold() if ctx.task.split() else ""
    return 1.0 if first and first in text.casefold() else 0.0


@scorer
def broken(text: str, ctx: ScoringContext) -> float:
    """Always raises: score_all must record the failure and score it 0."""
    raise RuntimeError("plug-in bug")


def unmarked(text: str, ctx: ScoringContext) -> float:
    """Not marked with @scorer: naming it by dotted path is refused."""
    return 1.0
