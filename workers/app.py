"""The Celery application: ``celery -A workers.app worker`` starts a Quorum worker.

Broker and result backend come from ``QUORUM_REDIS_URL`` (or ``QUORUM_BROKER_URL`` and
``QUORUM_RESULT_BACKEND``); without either, the embedded Valkey that ``quorum`` started is used.
JSON is the only accepted codec, so a pickled message is refused, never executed.
"""

from __future__ import annotations

from celery import Celery

from orchestration.config import Settings, load_settings
from orchestration.errors import ConfigError
from workers import embedded


def broker_urls(settings: Settings) -> tuple[str, str]:
    """``(broker, backend)`` from the settings, else the running embedded server."""
    broker = settings.broker_url or settings.redis_url
    backend = settings.result_backend or settings.redis_url or broker
    if broker and backend:
        return broker, backend
    url = embedded.running_url()
    if url is None:
        raise ConfigError(
            "no Redis configured: set QUORUM_REDIS_URL (e.g. redis://127.0.0.1:6379/0), "
            "or start the embedded server with `quorum redis` / `quorum worker`",
            key="QUORUM_REDIS_URL",
        )
    return broker or url, backend or url


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from settings (the worker, the CLI and tests all use this)."""
    settings = settings or load_settings()
    broker, backend = broker_urls(settings)
    app = Celery("quorum", broker=broker, backend=backend, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        result_extended=True,
        result_expires=settings.result_expires_s,
        task_default_queue="quorum",
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
        redis_backend_health_check_interval=10,
        broker_heartbeat=0,
    )
    app.conf.quorum_settings = settings
    return app


app = create_app()
