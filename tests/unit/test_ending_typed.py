"""``ending_typed``, the catch-all around a step that must not raise (a chord body, run inline by
Celery, would otherwise leave its job unanswered): whatever the step raises ends the job with one
typed error under the job id, an unexpected error's traceback goes to the log, and a job already
answered is left as it is. Real result backend on the session's Valkey."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery.result import AsyncResult

from orchestration.config import Settings
from orchestration.errors import InsufficientResponsesError, QuorumError
from workers import app as app_module
from workers.job_errors import job_error
from workers.publication import ending_typed
from workers.runtime import build_runtime


@pytest.fixture
def app_rt(valkey_url: str) -> tuple[Any, Any]:
    settings = Settings(redis_url=valkey_url)
    app = app_module.create_app(settings)
    app.backend.client.flushall()
    return app, build_runtime(settings)


def _ended(app: Any, job_id: str) -> tuple[str, QuorumError | None]:
    result = AsyncResult(job_id, app=app)
    return result.state, job_error(result)


def test_an_unexpected_error_ends_the_job_typed_and_its_traceback_is_logged(
    app_rt: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    app, rt = app_rt
    caplog.set_level(logging.ERROR, logger="quorum.publication")
    with ending_typed(app, rt, "job-e1", by="body:job-e1.m", hostname=None, strategy="consensus"):
        {}["answers"]  # a bug in the step: KeyError
    state, error = _ended(app, "job-e1")
    assert state == "FAILURE"
    assert type(error) is QuorumError and error.reason == "internal"
    assert "builtins.KeyError: 'answers'" in str(error)
    assert "job job-e1: body:job-e1.m failed unexpectedly" in caplog.text
    assert "Traceback" in caplog.text and "KeyError" in caplog.text


def test_a_quorum_error_ends_the_job_as_raised_and_an_ended_job_stays_ended(
    app_rt: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    app, rt = app_rt
    with ending_typed(app, rt, "job-e2", by="body:job-e2.m", hostname=None, strategy="consensus"):
        raise InsufficientResponsesError("1 answer of the 2 needed", job_id="job-e2")
    state, error = _ended(app, "job-e2")
    assert state == "FAILURE" and type(error) is InsufficientResponsesError
    assert "failed unexpectedly" not in caplog.text  # an expected error: no traceback

    # another run of a step (a redelivered body) failing differently changes nothing
    with ending_typed(app, rt, "job-e2", by="body:other", hostname=None, strategy="consensus"):
        raise RuntimeError("late")
    state, error = _ended(app, "job-e2")
    assert state == "FAILURE" and type(error) is InsufficientResponsesError
