"""The ``quorum`` command against a real fleet: a wait that times out names the job and
``quorum result`` finds it, ``quorum generate`` runs, and ``quorum metrics`` (scraped over HTTP)
agrees with ``quorum status --json`` after real jobs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestration.data import load_emails
from orchestration.errors import AllProvidersFailedError
from stack.local import stop_group

pytestmark = pytest.mark.integration
EMAIL = load_emails()[1]


def quorum(fleet, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorum_cli", *args],
        input=stdin,
        env=fleet.env,
        cwd=fleet.workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_timed_out_wait_names_the_job_and_quorum_result_finds_it(clean, emulator):
    emulator.configure("claude", latency_median_ms=3000, latency_sigma=0)
    (clean.workdir / "mail.txt").write_text(EMAIL.text)
    slow = quorum(clean, "extract", "mail.txt", "--provider", "claude", "--no-cache", "--timeout", "0.5")
    assert slow.returncode == 4, slow.stderr
    assert "Traceback" not in slow.stderr and len(slow.stderr.strip().splitlines()) <= 2
    job_id = slow.stderr.split("quorum result ")[1].split()[0]
    found = quorum(clean, "result", job_id, "--wait", "30", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["job_id"] == job_id
    assert quorum(clean, "result", "no-such-job").returncode == 4


def test_generate_from_standard_input(clean):
    done = quorum(
        clean, "generate", "-", "--provider", "openai", "--provider", "gemini", "--selector", "majority",
        "--json", stdin="Write a haiku about queues.",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["kind"] == "generate" and result["text"] and result["selector"] == "majority"


def test_the_emulator_admin_api_refuses_unknown_providers(emulator):
    assert httpx.post(f"{emulator.url}/_admin/providers/nosuch/down").status_code == 404
    assert httpx.get(f"{emulator.url}/_admin/providers/nosuch").status_code == 404
    assert httpx.post(f"{emulator.url}/_admin/providers/openai/up").status_code == 200


def test_metrics_scraped_over_http_agree_with_status_json(clean, emulator):
    for strategy in ("failover", "consensus", "best_match"):
        clean.send(text=EMAIL.text, strategy=strategy, use_cache=False).get(timeout=30)
    clean.send(text=EMAIL.text, strategy="failover").get(timeout=30)
    clean.send(text=EMAIL.text, strategy="failover").get(timeout=30)  # a cache hit
    emulator.set_down("gemini")
    with pytest.raises(AllProvidersFailedError):
        clean.send(text=EMAIL.text, strategy="failover", providers=["gemini"], use_cache=False).get(
            timeout=30
        )

    port = free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "quorum_cli", "metrics", "--port", str(port)],
        env=clean.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline, text = time.monotonic() + 60, ""
        while time.monotonic() < deadline and not text:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.TransportError:
                time.sleep(0.2)
        status = quorum(clean, "status", "--detailed", "--json")
    finally:
        stop_group(exporter)
    data = json.loads(status.stdout)
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert got[("quorum_up", ())] == 1
    states = {"closed": 0, "half_open": 1, "open": 2}
    for row in data["providers"]:
        p = (("provider", row["provider"]),)
        assert got[("quorum_breaker_state", p)] == states[row["state"]]
        assert got[("quorum_provider_calls_total", p)] == row["calls"]
        assert got[("quorum_provider_cost_usd_total", p)] == pytest.approx(row["cost_usd"])
        assert got[("quorum_provider_tokens_total", (("direction", "out"), *p))] == row["tokens_out"]
        for kind, count in row["errors"].items():
            assert got[("quorum_provider_errors_total", (("error", kind), *p))] == count
    assert data["providers"][2]["errors"]  # gemini failed: the comparison covered an error class
    assert got[("quorum_cache_hits_total", ())] == data["cache_hits"] >= 1
    assert got[("quorum_cache_misses_total", ())] == data["cache_misses"]
    assert got[("quorum_jobs_recorded_total", ())] == data["jobs"] == 5
    by_outcome = {k[1]: v for k, v in got.items() if k[0] == "quorum_jobs_total"}
    assert sum(by_outcome.values()) == data["jobs"]
    assert by_outcome[(("kind", "extract"), ("outcome", "failed"), ("strategy", "failover"))] == 1
    assert by_outcome[(("kind", "extract"), ("outcome", "ok"), ("strategy", "consensus"))] == 1
