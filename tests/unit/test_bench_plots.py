"""``bench.plots`` on a small synthetic report (no workers), and ``quorum bench --help``."""

from __future__ import annotations

import json
import random
import sys

import pytest
from typer.testing import CliRunner

from bench import plots
from quorum_cli.main import cli

needs_matplotlib = pytest.mark.skipif(not plots.matplotlib_available(), reason="needs quorum[bench]")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _samples(rng: random.Random, median: float, n: int = 40) -> list[float]:
    return [round(rng.lognormvariate(0, 0.5) * median, 2) for _ in range(n)]


def synthetic_report() -> dict:
    rng = random.Random(7)
    fields = {"person_in_charge": 0.8, "startup_name": 0.9, "partner_org": 0.7, "details": 0.6, "date": 0.95}
    answer = {**fields, "field_mean": 0.79, "record": 0.4, "n": 20}
    scenario = {"cold": dict.fromkeys(("claude", "openai", "gemini", "consensus", "best_match"), answer)}
    scenario["warm"] = scenario["cold"]
    selector = {"chosen_ok": 0.9, "random_ok": 0.6, "any_ok": 1.0, "calls": 5.0}
    latency = {"single": 200, "consensus": 380, "consensus_early": 210}
    failover = {"direct": 25, "k1_closed": 45, "k2_closed": 65, "k1_open": 27, "k2_open": 29}
    series = [
        {"pool": pool, "workers": w, "jobs_s": 10.0 * w * f, "calls_s": 10.0 * w * f,
         "peak_rss_mb_per_worker": 100.0 * f}
        for pool, f in (("threads", 1.0), ("prefork", 0.5))
        for w in (1, 2, 4)
    ]  # fmt: skip
    machine = {"cores": 2, "cpu": "Test CPU", "memory_gb": 4.0, "python": "3.11.0",
               "implementation": "CPython", "os": "Linux 6"}  # fmt: skip
    return {
        "machine": machine,
        "size": "small",
        "generated_at": "2025-01-01T00:00:00+00:00",
        "benchmarks": {
            "latency": {
                "profile": {"median_ms": 200.0, "sigma": 0.8},
                "samples_ms": {k: _samples(rng, m) for k, m in latency.items()},
            },
            "failover": {
                "provider_latency_ms": 20.0,
                "samples_ms": {k: _samples(rng, m) for k, m in failover.items()},
            },
            "accuracy": {"figures": {"a": scenario, "b": scenario}},
            "selection": {"figures": {"majority": selector, "tournament": selector}},
            "scaling": {"series": series},
            "peer": {"failover": {"samples_ms": {"quorum": _samples(rng, 30), "litellm": _samples(rng, 40)}}},
            "cpu": {"title": "cpu: FAILED", "error": True},
        },
    }


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


@needs_matplotlib
def test_every_plot_is_written_as_a_png(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(synthetic_report()))
    assert plots.main(["--json", str(report), "--out", str(tmp_path / "png")]) == 0
    for name in ("latency.png", "throughput.png", "accuracy.png", "peer.png"):
        assert _is_png(tmp_path / "png" / name), name


@needs_matplotlib
def test_missing_data_is_skipped_with_a_message(tmp_path):
    messages: list[str] = []
    partial = synthetic_report()
    for name in ("latency", "failover", "scaling", "peer"):
        del partial["benchmarks"][name]
    partial["benchmarks"]["selection"] = {"title": "selection: FAILED", "error": True}
    written = plots.write_all(partial, tmp_path, say=messages.append)
    assert [p.name for p in written] == ["accuracy.png"] and _is_png(tmp_path / "accuracy.png")
    skipped = [m for m in messages if ": skipped (" in m]
    assert {m.split(":")[0] for m in skipped} == {"latency.png", "throughput.png", "peer.png"}
    assert plots.write_all({}, tmp_path / "empty", say=messages.append) == []


@needs_matplotlib
def test_throughput_falls_back_to_pools(tmp_path):
    report = synthetic_report()
    del report["benchmarks"]["scaling"]
    report["benchmarks"]["pools"] = {"configs": [
        {"pool": "threads", "concurrency": 8, "jobs_s": 12.0, "peak_pss_mb": 150.0},
        {"pool": "threads", "concurrency": 64, "jobs_s": 30.0, "peak_pss_mb": 190.0},
        {"pool": "prefork", "concurrency": 8, "jobs_s": None, "peak_pss_mb": 1100.0},
    ]}  # fmt: skip
    messages: list[str] = []
    assert plots.plot_throughput(report, tmp_path, say=messages.append) is not None
    assert _is_png(tmp_path / "throughput.png") and "pools" in messages[0]


def test_quorum_bench_help():
    result = CliRunner().invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    assert "--full" in result.output and "--only" in result.output and "--out" in result.output


def test_without_matplotlib_it_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert plots.main(["--json", str(tmp_path / "report.json")]) == 0
    assert "pip install 'quorum[bench]'" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
