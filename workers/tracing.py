"""OpenTelemetry traces, the optional extra ``[otel]``: one job is one trace.

Off unless the OpenTelemetry SDK is installed *and* configured the standard way:
``OTEL_TRACES_EXPORTER`` names an exporter (not ``none``), or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (then ``otlp``). ``OTEL_SDK_DISABLED=true`` turns it
off, and so does ``ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE=content`` (job texts in spans).
When off, nothing of OpenTelemetry is imported and no task signal is connected. When on, a worker
connects :mod:`workers.spans` at start (``worker_init``; in each child with the prefork pool,
``worker_process_init``): trace context travels in the message headers (never the kwargs, so
the MACs are unaffected), and every task of the job joins the trace of whoever sent it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_ready

log = logging.getLogger("quorum.tracing")

_installed = False
_service = ""

#: The Anthropic SDK's own spans (nested under each call's span) record the prompt with this set.
CONTENT_MODE = "ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE"


def configured(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (OpenTelemetry's own variables decide)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def available() -> bool:
    """Whether the ``[otel]`` extra (the OpenTelemetry SDK) is installed."""
    return importlib.util.find_spec("opentelemetry") is not None and (
        importlib.util.find_spec("opentelemetry.sdk") is not None
    )


def start(service_name: str = "quorum-worker", env: Mapping[str, str] | None = None) -> bool:
    """Turn traces on in this process when configured (once); True when they are on."""
    global _installed, _service
    env = os.environ if env is None else env
    if _installed:
        return True
    if not configured(env):
        return False
    if not available():
        log.warning("OTEL_* variables are set but the [otel] extra is not installed: no traces")
        return False
    if env.get(CONTENT_MODE, "").strip().lower() == "content":
        log.error(
            "traces stay off: %s=content would put job texts into the SDK's spans; unset it", CONTENT_MODE
        )
        return False
    from workers import spans  # imports opentelemetry: only now

    _service = spans.install(env, service_name)
    _installed = True
    return True


@contextmanager
def sending(task: str, job_id: str) -> Iterator[None]:
    """A producer's send (the CLI's): with traces configured in this process too, the job's
    trace starts at a ``send <task>`` span here and the workers' spans join it."""
    if not start(service_name="quorum-cli"):
        yield
        return
    from workers import spans

    with spans.producer_span(task, job_id):
        yield


@contextmanager
def inline(task: str, job_id: str) -> Iterator[None]:
    """A span for a task Celery calls inline (a failover errback), when traces are on."""
    if not _installed:
        yield
        return
    from workers import spans

    with spans.inline_span(task, job_id):
        yield


def _prefork(sender: Any) -> bool:
    """Whether the starting worker's pool forks (its ``pool_cls`` is still a name or a class)."""
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    try:
        pool = get_implementation(getattr(sender, "pool_cls", None) or "prefork")
    except Exception:  # an unknown pool: Celery itself says so next
        return False
    return isinstance(pool, type) and issubclass(pool, TaskPool)


@worker_init.connect
def _start_in_worker(sender: Any = None, **_: Any) -> None:
    """Threads and solo pools run tasks in this process: start here (prefork: in each child)."""
    if not _prefork(sender):
        start()


@worker_process_init.connect
def _start_in_child(**_: Any) -> None:
    """A prefork child starts its own exporter threads (they do not survive the fork)."""
    start()


@worker_ready.connect
def _say_so(**_: Any) -> None:
    """One log line once the worker's logging is set up (``worker_init`` comes before it)."""
    if _installed:
        log.info("traces on: OpenTelemetry spans for every task (service %s)", _service)
