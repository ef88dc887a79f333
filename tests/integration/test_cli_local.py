"""The README's main job and `quorum extract` on the embedded default, as a new user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from orchestration.data import load_emails
from orchestration.state import record_call
from tests.integration.fleet import PYTHONPATH

pytestmark = pytest.mark.integration


def quorum(
    args: list[str], home: Path, stdin: str | None = None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_") and not k.endswith("_API_KEY")}
    env["QUORUM_HOME"] = str(home)  # embedded Valkey data and logs under a fresh home
    env["PYTHONPATH"] = PYTHONPATH  # this checkout's code, run from the user's folder
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "quorum_cli", *args],
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


def snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key of a Redis with its serialised value (type, content) but not its TTL."""
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}


def test_demo_runs_in_its_own_namespace_and_leaves_nothing_running(tmp_path):
    """The user's embedded Valkey holds state; the demo runs (three strategies, an outage) and
    leaves that state byte for byte as it was, and its jobs never show in the user's status."""
    url = quorum(["redis"], tmp_path).stdout.strip()
    user = redis.Redis.from_url(url)
    assert quorum(["set-strategy", "consensus", "--order", "openai,gemini"], tmp_path).returncode == 0
    record_call(user, "quorum:", "openai", ok=True, now=time.time(), latency_ms=250.0)
    before = snapshot(user)

    done = quorum(["demo", "--emails", "2"], tmp_path, QUORUM_BREAKER__CONSECUTIVE_FAILURES="2")
    assert done.returncode == 0, done.stdout + done.stderr
    for needle in ("failover", "consensus", "best_match", "taken down", "circuit breaker open"):
        assert needle in done.stdout + done.stderr
    assert "Started embedded Valkey at redis://127.0.0.1:" in done.stdout + done.stderr
    assert str(tmp_path / "demo") in done.stdout + done.stderr  # its own data directory
    assert "prefix quorum-demo:" in done.stdout  # the demo's status reads the demo's state

    assert snapshot(user) == before
    status = json.loads(quorum(["status", "--detailed", "--json"], tmp_path).stdout)
    assert status["jobs"] == 0 and status["strategy"] == "consensus"
    assert quorum(["redis", "--stop"], tmp_path).returncode == 0
    assert leftover_pids(tmp_path) == []


def test_extract_from_stdin_prints_json(tmp_path):
    email = load_emails()[0]
    done = quorum(["extract", "-", "--json", "--strategy", "failover"], tmp_path, stdin=email.text)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["strategy"] == "failover" and set(result["fields"]) == set(email.labels)
    assert leftover_pids(tmp_path) == []
