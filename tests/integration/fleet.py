"""A real fleet for integration tests: worker processes (``celery -A workers.app worker``)
against a real Valkey and the emulator, plus a producer app that sends jobs by name; started by
the shared launcher (:class:`stack.local.LocalFleet`) with the test configuration below."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from stack.local import LocalFleet

#: Child processes import this checkout's packages whatever their working directory (an editable
#: install may point at another checkout, or predate a package).
CHECKOUT = Path(__file__).resolve().parents[2]
PYTHONPATH = os.pathsep.join(p for p in (str(CHECKOUT), os.environ.get("PYTHONPATH")) if p)

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


class Fleet(LocalFleet):
    """Worker processes plus a producer, sharing one Redis and one emulator, with the test config."""

    def __init__(
        self,
        redis_url: str,
        emulator_url: str,
        workdir: Path,
        concurrency: int = 16,
        visibility_timeout_s: int | None = None,  # None: the shipped default (recovery never needs it)
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.redis_url, self.emulator_url, self.workdir = redis_url, emulator_url, workdir
        self.concurrency = concurrency
        self.config_path = workdir / "quorum.toml"
        self.config_path.write_text(
            TEST_CONFIG.format(
                visibility=""
                if visibility_timeout_s is None
                else f"visibility_timeout_s = {visibility_timeout_s}\n",
                concurrency=concurrency,
            )
        )
        env = {
            **os.environ,
            **FAKE_KEYS,
            "QUORUM_CONFIG": str(self.config_path),
            "QUORUM_REDIS_URL": redis_url,
            "QUORUM_EMULATOR_URL": emulator_url,
            "QUORUM_FLEET_SECRET": FLEET_SECRET,
            "PYTHONPATH": PYTHONPATH,
            **(extra_env or {}),
        }
        super().__init__(env, workdir)

    @property
    def workers(self) -> dict[str, subprocess.Popen[bytes]]:
        """The running workers by name."""
        return self.procs

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
        concurrency = concurrency or self.concurrency
        self.start_workers([name], pool=pool, concurrency=concurrency, queues=queues, env=env)

    def stop(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL) and close the producer."""
        self.close()
