"""The OpenTelemetry side of :mod:`workers.tracing`, imported only when traces are on.

Celery signals, no patching: ``before_task_publish`` injects the current context (W3C
``traceparent``) into the message headers; ``task_prerun`` starts the task's span as a child of
the context its message carries (a new trace when it carries none, e.g. a producer without
OpenTelemetry), ``task_success`` / ``task_failure`` add the outcome, ``task_postrun`` ends it.
A failover errback runs inline inside the failed call's span, so the next hop it sends is that
span's child; a chord body is sent by the last header call, inside that call's span.

Attributes are an allow-list built from the task id and the provider call's own outcome: the
email, prompt, schema and answer never reach a span, nor does any exception message (only its
class: a provider's error body or a refusal may quote what the producer sent).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from celery.signals import before_task_publish, task_failure, task_postrun, task_prerun, task_success
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

log = logging.getLogger("quorum.tracing")

#: Tasks whose result (or whose error's ``details["attempt"]``) is one provider call's outcome.
CALL_TASKS = frozenset({"quorum.call", "quorum.gen_call"})
#: ``OTEL_TRACES_EXPORTER`` name of the exporter below (one JSON span per line, at each span end).
JSONL_EXPORTER = "jsonl"

_tracer: trace.Tracer | None = None
_live: dict[tuple[int, str], tuple[Span, object]] = {}
_lock = threading.Lock()


class JsonLinesExporter(SpanExporter):
    """Appends each finished span as one JSON line to a file (``QUORUM_TRACES_FILE``): for tests
    and for a look at one worker's traces without a collector."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._write = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(json.loads(s.to_json(indent=None))) + "\n" for s in spans)
        with self._write, self.path.open("a", encoding="utf-8") as f:
            f.write(lines)
        return SpanExportResult.SUCCESS


class _RequestGetter(Getter[Any]):
    """Reads propagation headers from a task's request (Celery copies message headers onto it)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = getattr(carrier, key, None)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Any) -> list[str]:
        return []


_GETTER = _RequestGetter()


#: Longest task id a span shows: a producer chooses the entry's id, a valid one is ≤ 128 characters.
MAX_ID_CHARS = 160


def job_id_of(task_id: str) -> str:
    """The job a task belongs to: its id up to the first ``.`` (``<job>.h1``, ``<job>.m``...)."""
    return task_id[:MAX_ID_CHARS].split(".", 1)[0]


def attempt_attributes(attempt: Mapping[str, Any]) -> dict[str, str | bool | int | float]:
    """What a span shows of one provider call: who, with which parameters, how it ended, what it
    cost; never its text."""
    error = attempt.get("error") if isinstance(attempt.get("error"), dict) else {}
    params = attempt.get("params") if isinstance(attempt.get("params"), dict) else {}
    attrs: dict[str, str | bool | int | float] = {
        "quorum.provider": str(attempt.get("provider") or ""),
        "quorum.model": str(attempt.get("model") or ""),
        "quorum.label": str(attempt.get("label") or ""),
        "quorum.outcome": "ok" if attempt.get("ok") else str((error or {}).get("type") or "error"),
        "quorum.skipped": bool(attempt.get("skipped")),
        "quorum.tokens_in": int(attempt.get("tokens_in") or 0),
        "quorum.tokens_out": int(attempt.get("tokens_out") or 0),
        "quorum.cost_usd": float(attempt.get("cost_usd") or 0.0),
        "quorum.latency_ms": float(attempt.get("latency_ms") or 0.0),
    }
    for name, kind in (("temperature", float), ("top_p", float), ("max_tokens", int)):
        value = (params or {}).get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs[f"quorum.params.{name}"] = kind(value)
    return attrs


def _span(task_id: str | None) -> Span | None:
    if not task_id:
        return None
    entry = _live.get((threading.get_ident(), task_id))
    return entry[0] if entry else None


def _inject(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """The message carries the sender's context (a task's span, a producer's span) in its headers."""
    if isinstance(headers, dict):
        propagate.inject(headers)


def _prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is None or not task_id or _tracer is None:
        return
    # Baggage is dropped: a producer's would ride along every hop and into the providers' requests.
    parent = baggage.clear(propagate.extract(task.request, getter=_GETTER))
    attrs = {
        "quorum.job_id": job_id_of(task_id),
        "celery.task_id": task_id[:MAX_ID_CHARS],
        "celery.task_name": task.name,
    }
    span = _tracer.start_span(task.name, context=parent, kind=SpanKind.CONSUMER, attributes=attrs)
    token = context.attach(trace.set_span_in_context(span, parent))
    with _lock:
        _live[(threading.get_ident(), task_id)] = (span, token)


def _success(sender: Any = None, result: Any = None, **_: Any) -> None:
    span = _span(getattr(getattr(sender, "request", None), "id", None))
    if span is not None and getattr(sender, "name", None) in CALL_TASKS and isinstance(result, dict):
        span.set_attributes(attempt_attributes(result))


def _failure(sender: Any = None, task_id: str | None = None, exception: Any = None, **_: Any) -> None:
    span = _span(task_id)
    if span is None:
        return
    details = getattr(exception, "details", None)
    attempt = details.get("attempt") if isinstance(details, dict) else None
    if getattr(sender, "name", None) in CALL_TASKS and isinstance(attempt, dict):
        span.set_attributes(attempt_attributes(attempt))
    name = type(exception).__name__
    span.set_attribute("quorum.outcome", name)
    span.set_status(Status(StatusCode.ERROR, name))  # the class only: messages may quote input


def _postrun(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    with _lock:
        entry = _live.pop((threading.get_ident(), task_id or ""), None)
    if entry is None:
        return
    span, token = entry
    if state:
        span.set_attribute("celery.state", state)
    span.end()
    context.detach(token)  # type: ignore[arg-type]


@contextmanager
def inline_span(task: str, job_id: str) -> Iterator[None]:
    """The span of a task Celery runs inline (a failover errback), inside the failed call's."""
    tracer = _tracer or trace.get_tracer("quorum.workers")
    attrs = {"quorum.job_id": job_id, "celery.task_name": task}
    with tracer.start_as_current_span(task, attributes=attrs, record_exception=False) as span:
        try:
            yield
        except BaseException as e:
            span.set_status(Status(StatusCode.ERROR, type(e).__name__))
            raise


@contextmanager
def producer_span(task: str, job_id: str) -> Iterator[None]:
    """The span of a producer's send: current while the message is published (and injected)."""
    tracer = _tracer or trace.get_tracer("quorum.workers")
    attrs = {"quorum.job_id": job_id, "celery.task_name": task}
    with tracer.start_as_current_span(f"send {task}", kind=SpanKind.PRODUCER, attributes=attrs):
        yield


def _processors(env: Mapping[str, str]) -> list[SpanProcessor]:
    """Span processors for ``OTEL_TRACES_EXPORTER`` (``otlp`` when only an endpoint is set):
    ``jsonl`` is :class:`JsonLinesExporter`; other names are the exporters installed packages
    register (``console`` from the SDK; ``otlp`` is ``opentelemetry-exporter-otlp-proto-http``, or
    ``-proto-grpc`` with ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``)."""
    processors: list[SpanProcessor] = []
    for raw in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        name = raw.strip().lower()
        if name in ("", "none"):
            continue
        if name == JSONL_EXPORTER:
            path = env.get("QUORUM_TRACES_FILE") or "quorum-spans.jsonl"
            processors.append(SimpleSpanProcessor(JsonLinesExporter(path)))
            continue
        if name == "otlp":  # the protocol picks the package (the [otel] extra ships http/protobuf)
            grpc = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip().lower() == "grpc"
            name = "otlp_proto_grpc" if grpc else "otlp_proto_http"
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            log.warning("OTEL_TRACES_EXPORTER=%s: no such exporter installed; its spans are dropped", name)
            continue
        exporter_cls = next(iter(found)).load()
        processors.append(BatchSpanProcessor(exporter_cls()))
    return processors


def install(env: Mapping[str, str], service_name: str) -> str:
    """Set up this process's tracer (reusing an SDK provider set up already, e.g. by
    ``opentelemetry-instrument``) and connect the task signals; returns the service name."""
    global _tracer
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
        provider = TracerProvider(resource=Resource.create({} if named else {"service.name": service_name}))
        for processor in _processors(env):
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("quorum.workers")
    before_task_publish.connect(_inject, weak=False)
    task_prerun.connect(_prerun, weak=False)
    task_success.connect(_success, weak=False)
    task_failure.connect(_failure, weak=False)
    task_postrun.connect(_postrun, weak=False)
    return str(provider.resource.attributes.get("service.name", service_name))
