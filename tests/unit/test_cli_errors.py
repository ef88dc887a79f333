"""The operator's edges: one-line answers with documented exit codes, no Redis started by
read-only commands, the Redis a report was read from, the CLI's input helpers."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import redis
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from quorum_cli.exits import EXIT_CODES, explain
from quorum_cli.jobio import parse_candidate, spinner
from quorum_cli.main import cli
from stack.client import JobStillRunning
from stack.embedded import describe

runner = CliRunner()
DOWN = "redis://127.0.0.1:1/0"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No configured Redis, an empty QUORUM_HOME (no embedded server), the built-in config."""
    for var in ("QUORUM_REDIS_URL", "QUORUM_BROKER_URL", "QUORUM_RESULT_BACKEND", "QUORUM_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QUORUM_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_line_answer(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and 1 <= len(result.output.strip().splitlines()) <= 2
    return result.output


@pytest.mark.parametrize(
    "args", [["set-strategy", "consensus"], ["reset", "openai"], ["status"], ["status", "--json"]]
)
def test_unreachable_redis_is_one_line_and_exit_3(home, monkeypatch, args):
    monkeypatch.setenv("QUORUM_REDIS_URL", DOWN)
    output = one_line_answer(runner.invoke(cli, args), 3)
    assert "Redis unreachable" in output and "127.0.0.1:1" in output


def test_a_url_that_is_not_redis_names_the_scheme_and_the_fix(home, monkeypatch):
    monkeypatch.setenv("QUORUM_REDIS_URL", "http://ops:secret@localhost:6379")
    output = one_line_answer(runner.invoke(cli, ["status"]), 2)
    assert "'http' is not a Redis URL scheme" in output and "redis://" in output
    assert "secret" not in output


def test_debug_shows_the_traceback_instead(home, monkeypatch):
    monkeypatch.setenv("QUORUM_REDIS_URL", DOWN)
    result = runner.invoke(cli, ["--debug", "set-strategy", "consensus"])
    assert isinstance(result.exception, redis.ConnectionError)


def test_unreadable_input_files_are_usage_errors(home):
    output = one_line_answer(runner.invoke(cli, ["extract", "missing.txt"]), 2)
    assert "missing.txt: no such file" in output
    (home / "latin1.txt").write_bytes("Réunion à Paris vendredi".encode("latin-1"))
    output = one_line_answer(runner.invoke(cli, ["extract", "latin1.txt"]), 2)
    assert "not utf-8 text" in output and "--encoding latin-1" in output
    (home / "schema.json").write_text("{oops")
    output = one_line_answer(
        runner.invoke(cli, ["extract", "latin1.txt", "--encoding", "latin-1", "--schema", "schema.json"]), 2
    )
    assert "schema.json: not JSON (line 1" in output


def test_read_only_commands_never_start_a_redis(home):
    for args in (["status"], ["set-strategy", "failover"], ["reset", "openai"], ["result", "some-job"]):
        output = one_line_answer(runner.invoke(cli, args), 3)
        assert "no Redis configured or running" in output and "quorum redis" in output
    assert not list(home.rglob("server.json"))  # nothing was started


def test_every_status_names_the_redis_it_read(valkey_url, home, monkeypatch):
    monkeypatch.setenv("QUORUM_REDIS_URL", valkey_url)
    where = valkey_url.removeprefix("redis://") + "/0"
    data = json.loads(runner.invoke(cli, ["status", "--json"]).output)
    assert data["redis"] == where and data["key_prefix"] == "quorum:"
    assert f"Redis {where}" in runner.invoke(cli, ["status"]).output


def test_the_redis_is_named_without_its_password():
    assert describe("redis://:s3cret@redis.internal:6380/2") == "redis.internal:6380/2"
    assert describe("rediss://user:pw@h") == "h:6379/0"


def test_order_naming_a_disabled_provider_is_refused(valkey_url, home, monkeypatch):
    monkeypatch.setenv("QUORUM_REDIS_URL", valkey_url)
    output = one_line_answer(runner.invoke(cli, ["set-strategy", "failover", "--order", "local,openai"]), 2)
    assert "disabled provider(s) local" in output


def test_quorum_test_says_it_reads_its_own_environment(home, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("QUORUM_EMULATOR_URL", raising=False)
    result = runner.invoke(cli, ["test", "claude"])
    assert result.exit_code == 1
    assert "ANTHROPIC_API_KEY is not set in this shell's environment" in result.output
    assert "worker's environment" not in result.output


def test_a_wait_that_times_out_names_the_job_and_how_to_look_it_up():
    message, code = explain(JobStillRunning("job-123", 1.0))
    assert code == 4 and "job job-123" in message and "quorum result job-123" in message
    assert set(EXIT_CODES) >= {0, 1, 2, 3, 4}


def test_candidate_specs():
    c = parse_candidate("openai:temperature=0.2,p=0.9")
    assert c.provider == "openai" and (c.params.temperature, c.params.top_p) == (0.2, 0.9)
    with pytest.raises(Exception, match="expected PROVIDER"):
        parse_candidate("openai:temp=3")


def test_the_spinner_shows_elapsed_time_only_when_asked():
    assert not isinstance(spinner(Console(), False)("j1"), Progress)
    buffer = io.StringIO()
    with spinner(Console(file=buffer, force_terminal=True), True)("j1") as progress:
        progress.refresh()
    assert "job j1" in buffer.getvalue() and "0:00:0" in buffer.getvalue()


def test_the_readme_documents_every_exit_code():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("| exit | meaning |", 1)[1].split("\n\n", 1)[0]
    assert {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)} == set(EXIT_CODES)
