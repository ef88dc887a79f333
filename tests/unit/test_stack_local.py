"""The shared launcher: a stopped process group leaves no child, the emulator stops with its block."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from stack.local import drop_stale_logs, start_emulator, stop_group, worker_command
from workers.liveness import pid_alive


def test_stop_group_stops_the_process_and_its_children() -> None:
    proc = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    stop_group(proc, timeout=5)
    proc.stdout.close()
    assert proc.poll() is not None
    deadline = time.monotonic() + 5
    while pid_alive(child) and time.monotonic() < deadline:  # reaped by init once killed
        time.sleep(0.05)
    assert not pid_alive(child)


def test_the_emulator_logs_and_stops_with_its_block(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "emulator.log"
    with start_emulator(log=log, log_level="info") as emu:
        assert emu.health()
        process = emu.process
    assert process is not None and process.poll() is not None
    assert f"EMULATOR_URL={emu.url}" in log.read_text()


def test_prefork_is_asked_for_by_the_alias_celery_honours() -> None:
    cmd = worker_command("w1", pool="prefork", concurrency=2, queues="quorum")
    assert cmd[cmd.index("-P") + 1] == "processes"
    assert cmd[cmd.index("-n") + 1] == "w1@%h"
    assert "-P" not in worker_command("w2")  # the app's configured pool


def test_a_new_local_stack_drops_the_worker_logs_of_exited_runs_only(tmp_path: Path) -> None:
    """Logs of a run whose command has exited go; a running command's logs and other files stay."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = [tmp_path / f"local{i}-{gone.pid}.log" for i in range(2)]
    kept = [tmp_path / f"local0-{os.getpid()}.log", tmp_path / "emulator.log", tmp_path / "local-notes.log"]
    for path in (*stale, *kept):
        path.write_text("x")
    drop_stale_logs(tmp_path)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
