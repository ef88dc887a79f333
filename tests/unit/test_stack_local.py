"""The shared launcher: a stopped process group leaves no child, the emulator stops with its block."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from stack.local import start_emulator, stop_group, worker_command


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
    while _alive(child) and time.monotonic() < deadline:  # reaped by init once killed
        time.sleep(0.05)
    assert not _alive(child)


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
