"""Traces on real workers: one job is one trace across its hops, errbacks and chord, with each
provider call's outcome as attributes and never the email (the ``[otel]`` extra)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestration.data import load_emails
from tests.integration.fleet import Fleet

pytest.importorskip("opentelemetry.sdk.trace")

pytestmark = pytest.mark.integration

#: A distinctive email: none of its lines may show up in any span.
SECRET_LINE = "Zephyrine Okonkwo-Lindqvist will sign the Quillfeather Robotics term sheet"
EMAIL = f"{load_emails()[0].text}\n{SECRET_LINE} on 12 March.\n"


@pytest.fixture(scope="module")
def traced(redis_url: str, emulator: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two workers exporting every finished span as a JSON line, each to its own file."""
    workdir = tmp_path_factory.mktemp("traced")
    env = {"OTEL_TRACES_EXPORTER": "jsonl", "OTEL_SERVICE_NAME": "quorum-test"}
    f = Fleet(redis_url=redis_url, emulator_url=emulator.url, workdir=workdir, concurrency=4, extra_env=env)
    try:
        for name in ("t1", "t2"):
            f.start_worker(name, env={"QUORUM_TRACES_FILE": str(workdir / f"{name}.spans.jsonl")})
        yield f
    finally:
        f.stop()


@pytest.fixture
def fresh(traced: Fleet, emulator: Any) -> Iterator[Fleet]:
    traced.reset_state()
    emulator.reset()
    yield traced
    emulator.reset()


def all_spans(fleet: Fleet) -> list[dict[str, Any]]:
    """Every finished span the workers exported (theirs and the provider SDKs' own)."""
    return [
        json.loads(line)
        for path in Path(fleet.workdir).glob("*.spans.jsonl")
        for line in path.read_text().splitlines()
    ]


def spans_of(fleet: Fleet, job_id: str, expected: int) -> list[dict[str, Any]]:
    """The job's task spans, once ``expected`` of them are there (a task's span ends just after
    it publishes the answer)."""
    deadline = time.monotonic() + 20
    while True:
        found = [s for s in all_spans(fleet) if s["attributes"].get("quorum.job_id") == job_id]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def by_task(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Task spans by task id (an errback Celery runs inline has a span but no task id)."""
    return {s["attributes"]["celery.task_id"]: s for s in spans if "celery.task_id" in s["attributes"]}


def assert_one_trace_without_the_email(fleet: Fleet, spans: list[dict[str, Any]]) -> None:
    """The job's spans share one trace; no span of that trace (the provider SDKs' spans nested
    under the calls included) holds any part of the email."""
    (trace_id,) = {s["context"]["trace_id"] for s in spans}
    whole = [s for s in all_spans(fleet) if s["context"]["trace_id"] == trace_id]
    assert len(whole) >= len(spans)
    for span in whole:
        dumped = json.dumps(span)
        assert "Zephyrine" not in dumped and "Quillfeather" not in dumped
        assert span["resource"]["attributes"]["service.name"] == "quorum-test"


def assert_call_attributes(span: dict[str, Any], provider: str, outcome: str) -> None:
    attrs = span["attributes"]
    assert span["name"] == "quorum.call"
    assert attrs["quorum.provider"] == provider and attrs["quorum.outcome"] == outcome
    assert attrs["quorum.model"]
    assert "quorum.tokens_in" in attrs and "quorum.cost_usd" in attrs


def test_failover_over_an_errback_is_one_trace(fresh, emulator):
    assert "traces on: OpenTelemetry spans for every task (service quorum-test)" in fresh.log("t1")
    emulator.set_down("claude")
    job = fresh.send(text=EMAIL, strategy="failover", providers=["claude", "openai"], use_cache=False)
    result = job.get(timeout=30)
    assert result["chosen"] == "openai"

    spans = spans_of(fresh, job.id, expected=4)
    tasks = by_task(spans)
    assert set(tasks) == {job.id, f"{job.id}.h0", f"{job.id}.h1"}
    assert_one_trace_without_the_email(fresh, spans)
    entry, first, second = tasks[job.id], tasks[f"{job.id}.h0"], tasks[f"{job.id}.h1"]
    (errback,) = [s for s in spans if s["name"] == "quorum.failover_next"]
    assert entry["name"] == "quorum.extract" and entry["parent_id"] is None  # the producer had no trace
    assert first["parent_id"] == entry["context"]["span_id"]
    # the errback ran inline inside the failed call's span and sent the next hop from its own
    assert errback["parent_id"] == first["context"]["span_id"]
    assert second["parent_id"] == errback["context"]["span_id"]
    assert_call_attributes(first, "claude", "OverloadedError")
    assert first["status"]["status_code"] == "ERROR"
    assert_call_attributes(second, "openai", "ok")
    assert second["attributes"]["quorum.tokens_out"] == result["attempts"][1]["tokens_out"] > 0
    assert second["attributes"]["quorum.cost_usd"] == pytest.approx(result["attempts"][1]["cost_usd"])


def test_consensus_chord_is_one_trace_with_the_merge(fresh):
    providers = ["claude", "openai", "gemini"]
    job = fresh.send(text=EMAIL, strategy="consensus", providers=providers, use_cache=False)
    result = job.get(timeout=30)
    assert result["strategy"] == "consensus"

    spans = spans_of(fresh, job.id, expected=5)
    tasks = by_task(spans)
    calls = [f"{job.id}.c{i}" for i in range(3)]
    assert set(tasks) == {job.id, *calls}  # the merge is no task: the last call runs it inline
    assert_one_trace_without_the_email(fresh, spans)
    entry_span = tasks[job.id]["context"]["span_id"]
    for i, provider in enumerate(providers):
        call = tasks[calls[i]]
        assert call["parent_id"] == entry_span
        assert_call_attributes(call, provider, "ok")
        assert call["attributes"]["quorum.tokens_in"] > 0 and call["attributes"]["quorum.cost_usd"] > 0
    (merge,) = [s for s in spans if s["name"] == "quorum.merge"]
    # the call that completes the chord runs the body inside its own span
    assert merge["parent_id"] in {tasks[c]["context"]["span_id"] for c in calls}


def test_varied_params_are_attributes_and_a_producer_trace_is_joined(fresh):
    from opentelemetry.propagate import inject
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("producer")  # a producer's own tracer, not the global one
    candidates = [
        {"provider": "openai", "params": {"temperature": 0.2, "top_p": 0.9, "max_tokens": 800}},
        {"provider": "openai", "params": {"temperature": 0.9}},
    ]
    with tracer.start_as_current_span("upstream request") as parent:
        headers: dict[str, str] = {}
        inject(headers)
        job = fresh.app.send_task(
            "quorum.extract",
            kwargs={"text": EMAIL, "strategy": "best_match", "candidates": candidates, "use_cache": False},
            headers=headers,
        )
    job.get(timeout=30)

    spans = spans_of(fresh, job.id, expected=4)
    tasks = by_task(spans)
    assert_one_trace_without_the_email(fresh, spans)
    assert int(spans[0]["context"]["trace_id"], 16) == parent.get_span_context().trace_id
    assert int(tasks[job.id]["parent_id"], 16) == parent.get_span_context().span_id
    first, second = tasks[f"{job.id}.c0"]["attributes"], tasks[f"{job.id}.c1"]["attributes"]
    assert first["quorum.params.temperature"] == 0.2 and first["quorum.params.top_p"] == 0.9
    assert first["quorum.params.max_tokens"] == 800
    assert second["quorum.params.temperature"] == 0.9 and "quorum.params.top_p" not in second


def test_quorum_extract_starts_the_trace_at_its_send(fresh, tmp_path):
    email = tmp_path / "mail.txt"
    email.write_text(EMAIL)
    env = {
        **fresh.env,
        "OTEL_TRACES_EXPORTER": "jsonl",
        "QUORUM_TRACES_FILE": str(Path(fresh.workdir) / "cli.spans.jsonl"),
    }
    cmd = [sys.executable, "-m", "quorum_cli", "extract", str(email), "--json", "--provider", "openai"]
    cmd += ["--strategy", "failover", "--no-cache"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]

    spans = spans_of(fresh, job_id, expected=3)
    tasks = {s["name"]: s for s in spans}
    assert set(tasks) == {"send quorum.extract", "quorum.extract", "quorum.call"}
    assert_one_trace_without_the_email(fresh, spans)
    send = tasks["send quorum.extract"]
    assert send["parent_id"] is None and send["resource"]["attributes"]["service.name"] == "quorum-test"
    assert tasks["quorum.extract"]["parent_id"] == send["context"]["span_id"]


def test_generation_job_is_one_trace_without_the_prompt(fresh, emulator):
    for name in ("claude", "openai"):  # an empty answer (a drawn defect) would fail the job
        emulator.configure(name, defects={"syntax": 0, "missing_requirement": 0, "refusal": 0, "empty": 0})
    prompt = f"Write a function that adds two integers for {SECRET_LINE}"
    job = fresh.send(
        "quorum.generate", prompt=prompt, providers=["claude", "openai"], selector="majority", use_cache=False
    )
    job.get(timeout=30)

    spans = spans_of(fresh, job.id, expected=4)
    tasks = by_task(spans)
    assert set(tasks) == {job.id, f"{job.id}.c0", f"{job.id}.c1"}  # the chord body runs inline
    assert_one_trace_without_the_email(fresh, spans)
    assert tasks[job.id]["name"] == "quorum.generate"
    (select,) = [s for s in spans if s["name"] == "quorum.gen_select"]
    assert select["parent_id"] in {tasks[f"{job.id}.c{i}"]["context"]["span_id"] for i in range(2)}
    for i, provider in enumerate(["claude", "openai"]):
        call = tasks[f"{job.id}.c{i}"]
        assert call["name"] == "quorum.gen_call" and call["attributes"]["quorum.provider"] == provider
        assert call["attributes"]["quorum.outcome"] == "ok" and call["attributes"]["quorum.tokens_out"] > 0
