"""The Celery app's settings: producers fail fast, workers ride out a Redis outage."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from celery.app import trace
from celery.app.defaults import DEFAULTS

from orchestration.config import Settings
from workers import app as app_module


@pytest.fixture
def conf() -> Iterator[dict[str, object]]:
    """The shared app's settings this test may change, restored afterwards."""
    conf = app_module.app.conf
    keys = ("task_send_sent_event", "task_publish_retry_policy")
    saved = {k: conf[k] for k in keys}
    yield saved
    conf.update(saved)


def test_a_producer_keeps_celerys_fail_fast_sending(conf: dict[str, object]) -> None:
    assert app_module.app.conf.task_send_sent_event is True
    assert app_module.app.conf.task_publish_retry_policy == DEFAULTS["task_publish_retry_policy"]


def test_a_worker_sends_hops_without_sent_events_and_retries_through_an_outage() -> None:
    app = app_module.create_app(Settings())
    app_module._worker_sending(sender=SimpleNamespace(app=app))  # what worker_init sends
    assert app.conf.task_send_sent_event is False
    policy = app.conf.task_publish_retry_policy
    assert policy["max_retries"] * policy["interval_max"] >= app_module.REDIS_OUTAGE_GRACE_S
    transport = app.conf.result_backend_transport_options
    assert transport["retry_policy"]["timeout"] >= app_module.REDIS_OUTAGE_GRACE_S
    assert app_module.app.conf.task_send_sent_event is True  # another app: untouched


def test_workers_use_quorums_transport_with_a_visibility_timeout_above_any_deadline() -> None:
    from orchestration.config import Settings
    from orchestration.models import MAX_DEADLINE_S

    settings = Settings()
    app = app_module.create_app(settings)
    options = app.conf.broker_transport_options
    assert app.conf.broker_transport == "workers.transport:Transport"
    assert options["visibility_timeout"] == settings.visibility_timeout_s > MAX_DEADLINE_S
    assert options["liveness_window"] == settings.liveness_window_s < 5  # recovery in seconds
    assert app.connection_for_write().transport.Channel.__module__ == "workers.transport"


def test_a_worker_names_itself_as_the_holder_of_its_messages() -> None:
    app = app_module.create_app(Settings())
    saved = dict(app.conf.broker_transport_options)
    app_module._name_the_holder(sender="w7@host", instance=SimpleNamespace(app=app))  # celeryd_init
    assert app.conf.broker_transport_options["consumer_name"] == "w7@host"
    assert app.conf.broker_transport_options["visibility_timeout"] == saved["visibility_timeout"]


def test_worker_signals_leave_apps_the_factory_did_not_build_alone() -> None:
    from celery import Celery

    other = Celery("other")
    app_module._worker_sending(sender=SimpleNamespace(app=other))
    app_module._name_the_holder(sender="w7@host", instance=SimpleNamespace(app=other))
    assert "consumer_name" not in (other.conf.broker_transport_options or {})
    assert other.conf.task_publish_retry_policy == DEFAULTS["task_publish_retry_policy"]


def test_importing_the_app_leaves_celerys_tracer_stock() -> None:
    assert "%(return_value)s" in trace.LOG_SUCCESS  # nothing assigned into celery.app.trace


def test_a_worker_logs_success_without_the_return_value() -> None:
    context = {"id": "t1", "name": "quorum.call", "return_value": "{'person': 'Maria'}", "runtime": 0.1}
    record = logging.LogRecord(
        "celery.app.trace", logging.INFO, __file__, 1, trace.LOG_SUCCESS, (context,), None
    )
    assert app_module.TracerLines().filter(record)
    assert record.getMessage() == "Task quorum.call[t1] succeeded in 0.1s"


@pytest.mark.parametrize(
    ("name", "kept"), [("quorum.extract", False), ("quorum.call", False), ("other.task", True)]
)
def test_a_worker_does_not_log_a_quorum_tasks_ignore_again(name: str, kept: bool) -> None:
    """Every job's entry ends in ``Ignore`` (it handed the job on) and says so itself: Celery's
    "Task … ignored" line is left out for Quorum's tasks, kept for any other app's."""
    context = {"id": "t1", "name": name, "description": "ignored"}
    record = logging.LogRecord(
        "celery.app.trace", logging.INFO, __file__, 1, trace.LOG_IGNORED.strip(), (context,), None
    )
    assert app_module.TracerLines().filter(record) is kept


def test_a_worker_at_info_does_not_log_each_sdk_http_request() -> None:
    """One INFO line per provider call from the SDKs' HTTP client repeated the task's own lines:
    a worker at INFO keeps their warnings only, at DEBUG all of them, and an operator's level."""
    names = app_module.HTTP_CLIENT_LOGGERS
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.NOTSET)
        app_module.quiet_http_clients(logging.DEBUG)
        assert all(logging.getLogger(n).level == logging.NOTSET for n in names)
        logging.getLogger(names[0]).setLevel(logging.INFO)  # the operator's choice
        app_module.quiet_http_clients(logging.INFO)
        assert logging.getLogger(names[0]).level == logging.INFO
        assert all(logging.getLogger(n).level == logging.WARNING for n in names[1:])
        assert not logging.getLogger(names[1]).isEnabledFor(logging.INFO)
        assert logging.getLogger(names[1]).isEnabledFor(logging.WARNING)
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


@pytest.mark.parametrize(
    ("backend", "shared"),
    [(None, True), ("redis://127.0.0.1:1/0", True), ("redis://127.0.0.1:2/0", False)],
)
def test_state_writes_share_the_answers_round_trip_only_on_the_backends_server(
    backend: str | None, shared: bool
) -> None:
    from workers.runtime import build_runtime

    rt = build_runtime(Settings(redis_url="redis://127.0.0.1:1/0", result_backend=backend))
    assert rt.state_on_backend is shared
