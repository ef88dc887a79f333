"""The Celery app's settings: producers fail fast, workers ride out a Redis outage."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery.app.defaults import DEFAULTS

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


def test_a_worker_sends_hops_without_sent_events_and_retries_through_an_outage(
    conf: dict[str, object],
) -> None:
    app_module._worker_sending()
    assert app_module.app.conf.task_send_sent_event is False
    policy = app_module.app.conf.task_publish_retry_policy
    assert policy["max_retries"] * policy["interval_max"] >= app_module.REDIS_OUTAGE_GRACE_S
    transport = app_module.app.conf.result_backend_transport_options
    assert transport["retry_policy"]["timeout"] >= app_module.REDIS_OUTAGE_GRACE_S
