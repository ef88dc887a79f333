"""Sample scorer plug-ins: tests/unit/test_scoring.py lists this module as an operator would
(``scorer_modules``), then resolves its marked callables by name."""

from __future__ import annotations

from orchestration.generation import ScoringContext, scorer


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
    """Not marked with @scorer: listing the module does not offer it to jobs."""
    return 1.0
