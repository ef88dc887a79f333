"""``bench.peer`` without running it: LiteLLM's router is pointed where Quorum's adapters point,
answers are recognised, and a missing LiteLLM gives a "skipped" section, named at the top of
the report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import peer
from bench.__main__ import main as bench_main
from emulator.admin import EmulatorHandle

URL = "http://127.0.0.1:9"


def _response(model: str, content: str | None) -> SimpleNamespace:
    message = SimpleNamespace(content=content)
    return SimpleNamespace(model=model, choices=[SimpleNamespace(message=message)])


def test_router_deployments_use_the_emulator_routes_quorum_uses() -> None:
    config = peer.router_config(URL)
    handle = EmulatorHandle(URL)
    try:
        bases = {d["model_name"]: d["litellm_params"]["api_base"] for d in config["model_list"]}
        assert bases == {"claude": handle.base_url("anthropic", "claude"),
                         "openai": handle.base_url("openai", "openai"),
                         # LiteLLM adds no API version; Google's SDK adds v1beta itself
                         "gemini": handle.base_url("gemini", "gemini") + "/v1beta"}  # fmt: skip
    finally:
        handle.close()
    models = {d["litellm_params"]["model"] for d in config["model_list"]}
    assert models == {"anthropic/claude-sonnet-4-6", "openai/gpt-4.1-mini", "gemini/gemini-2.5-flash"}
    assert config["num_retries"] == 0 and config["fallbacks"] == [
        {"claude": ["openai", "gemini"]},
        {"openai": ["gemini", "claude"]},
        {"gemini": ["claude", "openai"]},
    ]
    # each primary falls back in the order Quorum's job gets for it
    assert [peer._order(i) for i in range(4)] == [
        ["claude", "openai", "gemini"],
        ["openai", "gemini", "claude"],
        ["gemini", "claude", "openai"],
        ["claude", "openai", "gemini"],
    ]
    json.dumps(config)  # handed to the child process as JSON


def test_answers_are_recognised_by_deployment_and_shape() -> None:
    full = json.dumps({f: {"value": None, "confidence": 0.5} for f in peer.FIELDS})
    assert peer.litellm_answerer(_response("gpt-4.1-mini", full)) == "openai"
    assert peer.litellm_answerer(_response("claude-sonnet-4-6", full)) == "claude"
    assert peer.litellm_answerer(_response("gemini-2.5-flash", full)) == "gemini"
    assert peer.litellm_answerer(_response("claude-sonnet-4-6", "Here is an answer")) is None
    assert peer.litellm_answerer(_response("gpt-4.1-mini", json.dumps({"date": None}))) is None
    assert peer.litellm_answerer(_response("gpt-4.1-mini", None)) is None
    assert peer.quorum_answerer({"chosen": "openai"}) == "openai"
    assert peer.quorum_answerer({"chosen": "gemini"}) == "gemini"
    assert peer.quorum_answerer(RuntimeError("failed")) is None


def test_the_request_carries_the_extraction_schema() -> None:
    request = peer.litellm_request("Hello from <Lumora>")
    schema = request["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]) == peer.FIELDS
    assert "<email>\nHello from <Lumora>\n</email>" in request["messages"][1]["content"]


def test_without_litellm_the_section_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise ImportError("No module named 'litellm'")

    monkeypatch.setattr(peer, "import_litellm", missing)
    section = peer.run()
    assert section.data == {"skipped": True}
    assert 'pip install -e ".[bench]"' in section.markdown


def test_without_litellm_the_report_says_so_at_the_top(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing() -> None:
        raise ImportError("No module named 'litellm'")

    monkeypatch.setattr(peer, "import_litellm", missing)
    bench_main(["--only", "peer", "--out", str(tmp_path)])
    report = (tmp_path / "report.md").read_text()
    top = report.split("\n## ", 1)[0]  # everything before the first section
    assert "peer comparison with LiteLLM's Router did not run" in top
    assert 'pip install -e ".[bench]"' in top


def test_cpu_per_job_pools_every_round_not_the_window() -> None:
    """CPU per job is all the rounds' CPU over all their answers: a round whose window caught few
    answers (its jobs finished just after the edge) does not inflate it."""
    runs = [
        {"run_cpu_s": 1.0, "run_answered": 100, "cpu_s_per_s": 0.9, "jobs_s": 20.0},
        {"run_cpu_s": 3.0, "run_answered": 300, "cpu_s_per_s": 0.9, "jobs_s": 40.0},
    ]
    assert peer.cpu_ms_per_job({"runs": runs}) == pytest.approx(10.0)
    assert math.isnan(peer.cpu_ms_per_job({"runs": [{"run_cpu_s": 0.5, "run_answered": 0}]}))
