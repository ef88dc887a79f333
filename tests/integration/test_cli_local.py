"""The README's main job and `quorum extract` on the embedded default, as a new user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.data import load_emails

pytestmark = pytest.mark.integration


def quorum(args: list[str], home: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_") and not k.endswith("_API_KEY")}
    env["QUORUM_HOME"] = str(home)  # embedded Valkey data and logs under a fresh home
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        input=stdin,
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=240,
    )


def leftover_pids(home: Path) -> list[int]:
    """Processes still running from this home: the embedded server, workers, the emulator."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()[1:] if str(home) in line]


def test_demo_runs_three_strategies_and_leaves_nothing_running(tmp_path):
    done = quorum(["demo", "--emails", "3"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for needle in ("failover", "consensus", "best_match", "taken down", "circuit breaker open"):
        assert needle in done.stdout + done.stderr
    assert "Started embedded Valkey" in done.stdout + done.stderr
    assert leftover_pids(tmp_path) == []


def test_extract_from_stdin_prints_json(tmp_path):
    email = load_emails()[0]
    done = quorum(["extract", "-", "--json", "--strategy", "failover"], tmp_path, stdin=email.text)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["strategy"] == "failover" and set(result["fields"]) == set(email.labels)
    assert leftover_pids(tmp_path) == []
