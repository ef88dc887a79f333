"""When traces turn on, and what a provider call's span may show (workers.tracing, workers.spans)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workers import tracing


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_SERVICE_NAME": "quorum"}, False),
    ],
)
def test_only_opentelemetrys_own_variables_turn_traces_on(env, on):
    assert tracing.configured(env) is on


def test_unconfigured_worker_connects_no_tracing():
    # (redis-py imports opentelemetry by itself when installed: what counts is that Quorum's
    # tracing module stays unimported and no task signal of it is connected)
    code = (
        "import sys, os\n"
        "for k in [k for k in os.environ if k.startswith('OTEL_')]: del os.environ[k]\n"
        "import workers.tasks, workers.generation_tasks\n"
        "from workers import tracing\n"
        "assert tracing.start() is False\n"
        "from celery.signals import task_prerun\n"
        "print('workers.spans' in sys.modules, len(task_prerun.receivers))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "0"]


def test_anthropic_content_mode_keeps_traces_off():
    env = {"OTEL_TRACES_EXPORTER": "console", tracing.CONTENT_MODE: "content"}
    assert tracing.start(env=env) is False


def test_call_span_attributes_are_an_allow_list():
    spans = pytest.importorskip("workers.spans")
    text = "Dear Ms. Okonkwo, the term sheet for Quillfeather"
    attempt = {
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "label": "openai[t=0.7]",
        "params": {"temperature": 0.7, "top_p": None, "max_tokens": 500},
        "ok": True,
        "result": {"fields": {"details": text}, "text": text},
        "tokens_in": 120,
        "tokens_out": 40,
        "cost_usd": 0.0001,
        "latency_ms": 12.5,
    }
    attrs = spans.attempt_attributes(attempt)
    assert attrs["quorum.outcome"] == "ok" and attrs["quorum.provider"] == "openai"
    assert attrs["quorum.params.temperature"] == 0.7 and attrs["quorum.params.max_tokens"] == 500
    assert "quorum.params.top_p" not in attrs
    assert (attrs["quorum.tokens_in"], attrs["quorum.tokens_out"], attrs["quorum.cost_usd"]) == (
        120,
        40,
        0.0001,
    )
    assert not any("Quillfeather" in str(v) for v in attrs.values())
    failed = spans.attempt_attributes(
        {"provider": "claude", "error": {"type": "RateLimitError", "message": text}, "params": {}}
    )
    assert failed["quorum.outcome"] == "RateLimitError"
    assert not any("Quillfeather" in str(v) for v in failed.values())


def test_job_id_of_a_hop_is_its_jobs():
    spans = pytest.importorskip("workers.spans")
    assert [spans.job_id_of(t) for t in ("j-1", "j-1.h2", "j-1.c0", "j-1.m", "j-1.r0.j1")] == ["j-1"] * 5
    assert len(spans.job_id_of("x" * 100_000)) == spans.MAX_ID_CHARS  # a producer's id, bounded
