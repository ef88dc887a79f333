"""A real fleet for integration tests: worker processes (``celery -A workers.app worker``)
against a real Valkey and the emulator, plus a producer app that sends jobs by name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from orchestration.config import Settings, load_settings
from stack.local import stop_process
from workers.app import create_app

#: The test fleet's secret (workers sign and check internal messages with it; producers need none).
FLEET_SECRET = "test-fleet-secret-0123456789abcdef"

FAKE_KEYS = {
    "ANTHROPIC_API_KEY": "fake-ant-test-FAKEKEY-anthropic-0123456789",
    "OPENAI_API_KEY": "sk-test-FAKEKEY-openai-0123456789abcdef",
    "GEMINI_API_KEY": "fake-goog-test-FAKEKEY-gemini-0123456789",
}

TEST_CONFIG = """
key_prefix = "quorum:"
{visibility}worker_concurrency = {concurrency}

[providers.claude]
kind = "anthropic"
model = "claude-sonnet-4-6"
priority = 1
timeout_s = 5
price_in_per_mtok = 3.0
price_out_per_mtok = 15.0

[providers.openai]
kind = "openai"
model = "gpt-4.1-mini"
priority = 2
timeout_s = 5
price_in_per_mtok = 0.4
price_out_per_mtok = 1.6

[providers.gemini]
kind = "gemini"
model = "gemini-2.5-flash"
priority = 3
timeout_s = 5
price_in_per_mtok = 0.3
price_out_per_mtok = 2.5

[providers.local]
kind = "openai_compatible"
model = "llama3.1:8b"
priority = 4
timeout_s = 5

[orchestration]
deadline_s = 20
min_responses = 2

[breaker]
window_s = 30
min_calls = 4
failure_rate = 0.5
consecutive_failures = 3
cooldown_s = 1.0
max_cooldown_s = 4.0
probe_lease_s = 10
"""


def settings_from(env: dict[str, str]) -> Settings:
    """The settings a worker started with ``env`` sees (QUORUM_* variables and config file)."""
    old = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("QUORUM_")})
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(old)


@dataclass
class Fleet:
    """Worker processes plus a producer, sharing one Redis and one emulator."""

    redis_url: str
    emulator_url: str
    workdir: Path
    concurrency: int = 16
    #: None: the shipped default (crash recovery never depends on it).
    visibility_timeout_s: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config_path = self.workdir / "quorum.toml"
        self.config_path.write_text(
            TEST_CONFIG.format(
                visibility=""
                if self.visibility_timeout_s is None
                else f"visibility_timeout_s = {self.visibility_timeout_s}\n",
                concurrency=self.concurrency,
            )
        )
        self.env = {
            **os.environ,
            **FAKE_KEYS,
            "QUORUM_CONFIG": str(self.config_path),
            "QUORUM_REDIS_URL": self.redis_url,
            "QUORUM_EMULATOR_URL": self.emulator_url,
            "QUORUM_FLEET_SECRET": FLEET_SECRET,
            **self.extra_env,
        }
        self.settings = settings_from(self.env)
        self.app: Celery = create_app(self.settings)
        self.redis = redis.Redis.from_url(self.redis_url)

    # -- workers ---------------------------------------------------------------------------

    def start_worker(
        self,
        name: str,
        *,
        pool: str = "threads",
        concurrency: int | None = None,
        queues: str = "quorum",
        env: dict[str, str] | None = None,
    ) -> None:
        """Start ``celery -A workers.app worker`` as a real OS process and wait until it answers."""
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        cmd = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-P", pool,
            "-c", str(concurrency or self.concurrency), "-n", f"{name}@%h", "-l", "INFO",
            "--without-gossip", "--without-mingle", "-Q", queues,
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        self.workers[name] = proc
        deadline = time.monotonic() + 60  # a loaded CI machine imports Celery slowly
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{self.log(name)}")
            replies = self.app.control.ping(timeout=0.5)
            if any(name in next(iter(r)) for r in replies):
                return
        raise RuntimeError(f"worker {name} did not answer ping:\n{self.log(name)}")

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a worker process (SIGKILL by default: no chance to clean up)."""
        proc = self.workers.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def stop(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL) and close the producer."""
        for name in list(self.workers):
            stop_process(self.workers.pop(name))
        self.app.close()

    # -- jobs ------------------------------------------------------------------------------

    def send(self, task: str = "quorum.extract", **kwargs: Any) -> Any:
        """Send a job by name, as a producer that does not import Quorum would."""
        return self.app.send_task(task, kwargs=kwargs)

    def reset_state(self) -> None:
        """Forget Quorum's shared state (breakers, health, costs...) between tests."""
        keys = list(self.redis.scan_iter(match=f"{self.settings.key_prefix}*", count=1000))
        if keys:
            self.redis.delete(*keys)
