"""Test helper: run the emulator in a subprocess and drive it through its admin API.

``with start_emulator(profile) as emu:`` starts ``python -m emulator`` on a free
loopback port, waits for its ``EMULATOR_URL=`` line, yields an :class:`EmulatorHandle` and
always terminates the process on exit. The child also exits when its stdin closes, so it
cannot outlive a parent that is killed.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from emulator.server import URL_PREFIX
from orchestration.config import ProviderConfig, ProviderKind

_DEFAULT_MODELS: dict[str, str] = {
    "anthropic": "claude-emulated",
    "openai": "gpt-emulated",
    "openai_compatible": "local-emulated",
    "gemini": "gemini-emulated",
}


class EmulatorHandle:
    """A running emulator: its URL, per-provider base URLs and the admin endpoints."""

    def __init__(self, url: str, process: subprocess.Popen[bytes] | None = None) -> None:
        self.url = url.rstrip("/")
        self.process = process
        self._http = httpx.Client(base_url=self.url, timeout=10.0)

    def base_url(self, kind: ProviderKind, provider: str) -> str:
        """The SDK base URL for ``provider`` of ``kind`` (same rule as the settings use)."""
        config = ProviderConfig(kind=kind, model=_DEFAULT_MODELS[kind])
        url = config.effective_base_url(provider, self.url)
        assert url is not None
        return url

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        """True when the emulator answers its health check."""
        return self._json("GET", "/_admin/health").get("status") == "ok"

    def stats(self) -> dict[str, dict[str, Any]]:
        """``{provider: {"requests", "errors": {kind: n}, "in_flight", "down"}}``."""
        return self._json("GET", "/_admin/stats")  # type: ignore[no-any-return]

    def requests(self, provider: str) -> int:
        """How many requests reached ``provider``'s routes since start or the last reset."""
        return int(self.stats().get(provider, {}).get("requests", 0))

    def errors(self, provider: str) -> dict[str, int]:
        """Faults served by ``provider``, by kind."""
        return dict(self.stats().get(provider, {}).get("errors", {}))

    def set_down(self, provider: str, down: bool = True) -> None:
        """Take ``provider`` down (every request gets a 503) or bring it back up."""
        self._json("POST", f"/_admin/providers/{provider}/{'down' if down else 'up'}")

    def configure(self, provider: str, **overrides: Any) -> dict[str, Any]:
        """Merge profile ``overrides`` into ``provider`` at run time; returns the new profile."""
        return self._json("PUT", f"/_admin/providers/{provider}", overrides)["profile"]  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Clear counters, run-time overrides and down switches."""
        self._json("POST", "/_admin/reset")

    def close(self) -> None:
        """Close the admin HTTP client."""
        self._http.close()


def _pump(stream: IO[bytes], lines: queue.Queue[str | None], tail: collections.deque[str]) -> None:
    """Forward the child's output lines (keeps a tail for error messages; never blocks it)."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        tail.append(line)
        lines.put(line)
    lines.put(None)  # EOF


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


@contextmanager
def start_emulator(
    profile: Path | dict[str, Any] | None = None,
    *,
    port: int = 0,
    timeout: float = 20.0,
    log_level: str = "warning",
) -> Iterator[EmulatorHandle]:
    """Run the emulator in a subprocess for the duration of the ``with`` block.

    ``profile`` is a profile file, a dict in the profile-file shape (written to a temporary
    JSON file), or None for the packaged default.
    """
    with tempfile.TemporaryDirectory(prefix="quorum-emu-") as tmp:
        args = [sys.executable, "-m", "emulator", "--port", str(port),
                "--log-level", log_level, "--exit-with-parent"]  # fmt: skip
        if isinstance(profile, dict):
            path = Path(tmp) / "profile.json"
            path.write_text(json.dumps(profile, default=str), encoding="utf-8")
            args += ["--profile", str(path)]
        elif profile is not None:
            args += ["--profile", str(profile)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        handle: EmulatorHandle | None = None
        try:
            lines: queue.Queue[str | None] = queue.Queue()
            tail: collections.deque[str] = collections.deque(maxlen=40)
            assert process.stdout is not None
            threading.Thread(target=_pump, args=(process.stdout, lines, tail), daemon=True).start()
            url = _wait_for_url(lines, timeout)
            if url is None:
                raise RuntimeError("the emulator did not start:\n" + "\n".join(tail))
            handle = EmulatorHandle(url, process)
            yield handle
        finally:
            if handle is not None:
                handle.close()
            _stop(process)


def _wait_for_url(lines: queue.Queue[str | None], timeout: float) -> str | None:
    """The URL from the first ``EMULATOR_URL=`` line, or None on EOF or timeout."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            return None
        if line is None:
            return None
        if line.startswith(URL_PREFIX):
            return line[len(URL_PREFIX) :].strip()
    return None
