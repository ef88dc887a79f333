"""Running the emulator: a uvicorn server on loopback that announces its URL once listening."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import uvicorn

from emulator.app import create_app
from emulator.profile import load_profile

URL_PREFIX = "EMULATOR_URL="


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints ``EMULATOR_URL=...`` on stdout once it is listening."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit or not getattr(self, "servers", None):
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        shown = f"[{host}]" if ":" in host else host
        print(f"{URL_PREFIX}http://{shown}:{port}", flush=True)


def _exit_with_parent(server: uvicorn.Server) -> None:
    """Stop ``server`` when stdin reaches EOF (the parent that holds the pipe has gone)."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        server.should_exit = True

    threading.Thread(target=watch, name="emulator-parent-watch", daemon=True).start()


def serve(host: str = "127.0.0.1", port: int = 0, profile: Path | None = None, *,
          log_level: str = "warning", exit_with_parent: bool = False) -> None:  # fmt: skip
    """Serve the emulator until interrupted (blocking). Port 0 picks a free port.

    The bound URL is printed as ``EMULATOR_URL=http://HOST:PORT`` on its own stdout line.
    """
    app = create_app(load_profile(profile))
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off",
        http="h11", ws="none", backlog=4096, timeout_keep_alive=30, timeout_graceful_shutdown=1,
    )  # fmt: skip
    server = _AnnouncingServer(config)
    if exit_with_parent:
        _exit_with_parent(server)
    server.run()
