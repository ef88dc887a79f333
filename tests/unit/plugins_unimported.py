"""A module no test imports: naming it in a job's scorers must not import it (see test_scoring)."""

from __future__ import annotations

from orchestration.generation import ScoringContext, scorer

IMPORTED = True


@scorer
def x(text: str, ctx: ScoringContext) -> float:
    """Would be a valid scorer, if an operator had listed this module."""
    return 1.0
