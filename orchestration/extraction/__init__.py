"""Extraction jobs: a producer's request turned into a job (:class:`ExtractionSpec`), failover
planning, and the answer merged (consensus) or selected (best-match) from the candidates'.

Pure: the Celery layer passes in attempts, weights, the clock and availability.
"""

from orchestration.extraction.consensus import accuracy_updates, responses_from_attempts
from orchestration.extraction.failover import Fail, Send, next_step, skipped_attempt
from orchestration.extraction.jobs import (
    ExtractionSpec,
    build_result,
    cached_result,
    parse_request,
    prepare_extract,
    single_answer,
)
from orchestration.extraction.merge import early_answer_ready, early_pending, merge_answer
from orchestration.extraction.normalize import normalize_value

__all__ = [
    "ExtractionSpec",
    "Fail",
    "Send",
    "accuracy_updates",
    "build_result",
    "cached_result",
    "early_answer_ready",
    "early_pending",
    "merge_answer",
    "next_step",
    "normalize_value",
    "parse_request",
    "prepare_extract",
    "responses_from_attempts",
    "single_answer",
    "skipped_attempt",
]
