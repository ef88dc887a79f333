"""Generation jobs: a producer's request turned into a job (:class:`GenerationSpec`), the calls
it makes (candidates, judges, aggregator, escalation), the steps between them, and the
selectors and scorers (plug-ins by configuration only) that pick the answer.

Pure: the Celery layer runs the steps in its chord bodies and chain links.
"""

from orchestration.generation.jobs import (
    GenerationSpec,
    Progress,
    ProviderCall,
    build_result,
    cached_result,
    candidate_call,
    generation_invoke,
    parse_generation_request,
    prepare_generate,
)
from orchestration.generation.models import GenerationRequest, GenerationResult, TournamentRound
from orchestration.generation.scoring import SCORERS, ScoreCard, ScorerRegistry, ScoringContext, scorer
from orchestration.generation.steps import (
    Done,
    FollowUp,
    JudgeRound,
    NextCandidate,
    Step,
    after_call,
    after_candidate,
    after_candidates,
    after_round,
    require_answers,
)

__all__ = [
    "SCORERS",
    "Done",
    "FollowUp",
    "GenerationRequest",
    "GenerationResult",
    "GenerationSpec",
    "JudgeRound",
    "NextCandidate",
    "Progress",
    "ProviderCall",
    "ScoreCard",
    "ScorerRegistry",
    "ScoringContext",
    "Step",
    "TournamentRound",
    "after_call",
    "after_candidate",
    "after_candidates",
    "after_round",
    "build_result",
    "cached_result",
    "candidate_call",
    "generation_invoke",
    "parse_generation_request",
    "prepare_generate",
    "require_answers",
    "scorer",
]
