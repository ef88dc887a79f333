"""The Celery application, built by :func:`create_app`; ``celery -A workers.app worker`` starts a
Quorum worker on the module's ``app``.

Nothing is installed into Celery, kombu or billiard at import: a worker's own behaviour (success
lines without return values, cheaper exception records, sending that rides out a Redis outage)
is set up by ``worker_init``/``celeryd_init`` handlers, for the apps this factory built only.

Broker and result backend come from ``QUORUM_REDIS_URL`` (or ``QUORUM_BROKER_URL`` and
``QUORUM_RESULT_BACKEND``); without either, the embedded Valkey that ``quorum`` started is used.
JSON is the only accepted codec, so a pickled message is refused, never executed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from celery import Celery
from celery.app import trace
from celery.signals import celeryd_init, worker_init
from celery.worker import state as worker_state

from orchestration.config import Settings, load_settings
from orchestration.errors import ConfigError
from orchestration.generation import SCORERS
from stack import embedded
from workers import einfo_speedup, previews
from workers.requests import unsettled_tags

#: How long a worker keeps trying to write to Redis (a follow-up task, a result, the publication
#: guard) before giving up: a Redis restart or failover shorter than this loses no job. A task
#: given up on is acknowledged, so its job would stay pending until its deadline passes unseen.
REDIS_OUTAGE_GRACE_S = 30.0

#: Where an unconfigured app points until it is used; a worker refuses to start on it.
UNCONFIGURED_URL = "redis://127.0.0.1:6379/0"

#: Celery's Redis result backend with chord bodies that survive a killed worker (workers.backend),
#: selected the way Celery selects a backend class for a URL: ``<class>+redis://…``.
RESULT_BACKEND_CLASS = "workers.backend:ResultBackend"


def broker_urls(settings: Settings) -> tuple[str, str] | None:
    """``(broker, backend)`` from the settings, else the running embedded server, else None."""
    broker = settings.broker_url or settings.redis_url
    backend = settings.result_backend or settings.redis_url or broker
    if broker and backend:
        return broker, backend
    url = embedded.running_url()
    return (broker or url, backend or url) if url else None


def unconfigured_error() -> ConfigError:
    """What a worker says when it has no Redis to serve."""
    return ConfigError(
        "no Redis configured: set QUORUM_REDIS_URL (e.g. redis://127.0.0.1:6379/0), "
        "or start the embedded server with `quorum redis`",
        key="QUORUM_REDIS_URL",
    )


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from settings (the worker, the CLI and tests all use this)."""
    settings = settings or load_settings()
    urls = broker_urls(settings)
    broker, backend = urls or (UNCONFIGURED_URL, UNCONFIGURED_URL)
    app = Celery(
        "quorum",
        broker=broker,
        backend=f"{RESULT_BACKEND_CLASS}+{backend}",
        include=["workers.tasks", "workers.generation_tasks", "workers.tracing"],
        task_cls="workers.requests:QuorumTask",
    )
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
        # No STARTED state: a late chord body must never overwrite an early-published answer.
        task_track_started=False,
        # Results hold the answer only, not the task arguments (the email) as well.
        result_extended=False,
        result_expires=settings.result_expires_s,
        task_default_queue="quorum",
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # Atomic receive and crash recovery by liveness (workers.transport), no kombu patching.
        broker_transport="workers.transport:Transport",
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "liveness_window": settings.liveness_window_s,
            "running_tags": "workers.app:running_delivery_tags",
        },
        result_backend_transport_options={"retry_policy": {"timeout": REDIS_OUTAGE_GRACE_S}},
        redis_backend_health_check_interval=10,
        broker_heartbeat=0,
        # A refused public job (not JSON, undecodable) is answered with InvalidRequestError.
        worker_consumer="workers.refusals:RefusingConsumer",
    )
    app.conf.quorum_settings = settings
    app.conf.quorum_configured = urls is not None
    return app


app = create_app()


def _quorum_app(sender: object) -> Celery | None:
    """The app a starting worker serves, if :func:`create_app` built it (else None: not ours)."""
    started = getattr(sender, "app", None)
    return started if isinstance(started, Celery) and "quorum_settings" in started.conf else None


class TracerLines(logging.Filter):
    """Celery's tracer lines as Quorum's operators read them. A success says that a task
    succeeded and how fast, not what it returned (extracted personal data: Celery's
    ``LOG_SUCCESS`` line has the return value). A Quorum task's ``Ignore`` is not logged again as
    "Task … ignored": the task said why itself (an entry that handed its job on logs the plan; a
    refused or dropped task logs its reason), and every job's entry raises one."""

    IGNORED = trace.LOG_IGNORED.strip()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == trace.LOG_SUCCESS:
            record.msg = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"
        elif record.msg == self.IGNORED and isinstance(record.args, Mapping):
            return not str(record.args.get("name", "")).startswith("quorum.")
        return True


#: Loggers of the provider SDKs' HTTP clients: at INFO they log every provider call ("HTTP
#: Request: POST <url> "HTTP/1.1 200 OK""), which the task's own lines already report with its
#: task id; a record costs the worker ~20 µs. Kept at DEBUG and for warnings and errors.
HTTP_CLIENT_LOGGERS = ("httpx", "httpx2")


def quiet_http_clients(worker_level: object) -> None:
    """Unless the worker logs at DEBUG, the HTTP clients' loggers log warnings and errors only
    (a level an operator set on one of them is left alone)."""
    if not isinstance(worker_level, int) or worker_level <= logging.DEBUG:
        return
    for name in HTTP_CLIENT_LOGGERS:
        client_log = logging.getLogger(name)
        if client_log.level == logging.NOTSET:
            client_log.setLevel(logging.WARNING)


@worker_init.connect
def _worker_process(sender: object = None, **_: object) -> None:
    """Worker processes only (producers keep stock Celery and billiard): success lines without
    the return value, no "ignored" line for a Quorum task, no INFO line per HTTP request of the
    SDKs, exceptions that cost no copy of the tracer's code positions (and no formatted stack
    for an ``Ignore``), and result previews built in C, on the billiard and Celery versions the
    speed-ups were written against."""
    if _quorum_app(sender) is None:
        return
    tracer_log = logging.getLogger(trace.logger.name)
    if not any(isinstance(f, TracerLines) for f in tracer_log.filters):
        tracer_log.addFilter(TracerLines())
    quiet_http_clients(getattr(sender, "loglevel", None))
    einfo_speedup.install()
    previews.install()


@worker_init.connect
def _refuse_unconfigured(sender: object = None, **_: object) -> None:
    """A worker without a configured (or embedded) Redis stops with a clear message."""
    started = _quorum_app(sender)
    if started is not None and not started.conf.quorum_configured:
        raise unconfigured_error()


def running_delivery_tags() -> set[str] | None:
    """Delivery tags of the task messages this worker still works on (None: ask again later).

    After a lost broker connection Celery keeps its running tasks and forgets the rest (held for
    a countdown, or dropped when storing a result failed): the transport hands those back. A task
    that ran and whose ack has not gone through yet counts as running (Celery forgot it already).
    """
    try:
        requests = (*worker_state.active_requests, *worker_state.reserved_requests)
        finishing = unsettled_tags()
    except RuntimeError:  # changed size while copied: another thread started or ended a task
        return None
    return {r.message.delivery_tag for r in requests if r.message is not None} | finishing


@celeryd_init.connect
def _name_the_holder(sender: str | None = None, instance: object = None, **_: object) -> None:
    """The transport records this worker's node name with every task message it holds, so a
    restart under the same name hands back its previous run's messages at once."""
    started = _quorum_app(instance)
    if sender and started is not None:
        options = dict(started.conf.broker_transport_options or {})
        started.conf.broker_transport_options = {**options, "consumer_name": sender}


@worker_init.connect
def _worker_sending(sender: object = None, **_: object) -> None:
    """How a worker sends the hops of a job (a producer keeps Celery's defaults: it fails fast).

    No ``task-sent`` event: each hop's ``task-received`` follows within milliseconds, and the
    extra publish cost every hop ~1 ms (producers' sends still announce the public jobs). And
    sending the next hop, the link or the chord body rides out a Redis outage of up to
    ``REDIS_OUTAGE_GRACE_S`` instead of Celery's ~0.6 s, after which the job would be stranded.
    """
    started = _quorum_app(sender)
    if started is None:
        return
    started.conf.task_send_sent_event = False
    started.conf.task_publish_retry_policy = {
        "max_retries": int(REDIS_OUTAGE_GRACE_S / 0.5),
        "interval_start": 0,
        "interval_step": 0.25,
        "interval_max": 0.5,
    }


@worker_init.connect
def _load_scorer_plugins(sender: object = None, **_: object) -> None:
    """Import the operator's scorer modules (``[orchestration] scorer_modules``) once, at start:
    a job may name their scorers, and nothing else is ever imported because a job asked."""
    started = _quorum_app(sender)
    modules = started.conf.quorum_settings.orchestration.scorer_modules if started is not None else None
    if modules:
        names = SCORERS.load_modules(modules)
        logging.getLogger("quorum.app").info("scorer plug-ins: %s", ", ".join(names))
