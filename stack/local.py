"""A local stack for the CLI: Redis (configured or embedded), the emulator when no API key is
set, and worker processes, each started only if needed and stopped again on exit."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from orchestration.config import Settings
from stack import embedded
from workers.signing import embedded_secret, embedded_secret_path


def has_api_keys(settings: Settings, env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """True when at least one enabled provider has its API key in the environment."""
    for name in settings.enabled_providers():
        var = settings.providers[name].key_env()
        if var and env.get(var):
            return True
    return bool(env.get("GOOGLE_API_KEY"))


def start_emulator(profile: Path | None, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m emulator`` on a free loopback port; return it and its URL."""
    cmd = [sys.executable, "-m", "emulator", "--port", "0"]
    if profile:
        cmd += ["--profile", str(profile)]
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=open(log, "ab"),  # noqa: SIM115
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                if line.startswith("EMULATOR_URL="):
                    return proc, line.split("=", 1)[1].strip()
        if proc.poll() is not None:
            break
    stop_process(proc)
    raise RuntimeError(f"the emulator did not start; see {log}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate a process group started with ``start_new_session`` (then kill it if it lingers)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


@dataclass
class LocalStack:
    """Everything a one-machine run needs; ``with LocalStack(...) as stack:`` cleans up."""

    settings: Settings
    workers: int = 1
    emulate: bool | None = None
    profile: Path | None = None
    say: Callable[[str], None] = print
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    redis_dir: Path | None = None  # the embedded server's data folder (None: the user's)
    redis_url: str = ""
    emulator_url: str | None = None
    started_redis: bool = False
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __enter__(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start(self) -> None:
        logs = embedded.data_dir().parent / "logs"
        self.redis_url = self.settings.redis_url or ""
        if not self.redis_url:
            self.redis_url, self.started_redis = embedded.ensure_running(self.redis_dir)
            verb = "Started" if self.started_redis else "Using"
            self.say(
                f"{verb} embedded Valkey at {self.redis_url} (data: {self.redis_dir or embedded.data_dir()})"
            )
            for var in ("QUORUM_BROKER_URL", "QUORUM_RESULT_BACKEND"):  # all of the stack on it
                if not getattr(self.settings, var.removeprefix("QUORUM_").lower()):
                    self.env[var] = self.redis_url
            if self.settings.fleet_secret is None and self.settings.fleet_secret_file is None:
                embedded_secret()  # this machine's own secret (mode 0600), whichever server folder
                self.env.setdefault("QUORUM_FLEET_SECRET_FILE", str(embedded_secret_path()))
        self.env["QUORUM_REDIS_URL"] = self.redis_url
        emulate = (not has_api_keys(self.settings, self.env)) if self.emulate is None else self.emulate
        if emulate and not self.settings.emulator_url:
            proc, self.emulator_url = start_emulator(self.profile, logs / "emulator.log")
            self._procs.append(proc)
            self.say(f"No API keys set: providers are emulated at {self.emulator_url}")
        elif self.settings.emulator_url:
            self.emulator_url = self.settings.emulator_url
        if self.emulator_url:
            self.env["QUORUM_EMULATOR_URL"] = self.emulator_url
        for i in range(self.workers):
            self._procs.append(
                embedded.spawn_detached(self.worker_command(f"local{i}"), self.env, logs / f"worker-{i}.log")
            )

    @staticmethod
    def worker_command(name: str) -> list[str]:
        """The documented worker command, as this Python runs it."""
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-l",
            "INFO",
            "-n",
            f"{name}-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]

    def wait_for_workers(self, app: object, timeout: float = 60.0) -> None:
        """Block until this stack's workers answer a ping."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=0.5)  # type: ignore[attr-defined]
            mine = [r for r in replies if f"-{os.getpid()}@" in next(iter(r))]
            if len(mine) >= self.workers:
                return
        raise RuntimeError(
            "workers did not start in time; see the logs under " + str(embedded.data_dir().parent)
        )

    def close(self) -> None:
        """Stop every process this stack started, the embedded Valkey too if it started it."""
        for proc in reversed(self._procs):
            stop_process(proc)
        self._procs.clear()
        if self.started_redis:
            embedded.stop(self.redis_dir)
            self.started_redis = False
