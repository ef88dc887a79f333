"""A benchmark stack: Valkey, the emulator, real worker processes and a producer app.

``with Bench(workers=2, pool="threads", concurrency=32, profile={...}) as b:`` starts, with the
shared launcher (:mod:`stack.local`), a private Valkey, the emulator with ``profile`` and
``workers`` processes of the documented command ``celery -A workers.app worker``, each in its
own process group, and always stops them again. ``b.send(...)`` sends a job by name;
``b.timed(...)`` sends one and waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from celery.result import AsyncResult

from emulator.admin import EmulatorHandle
from orchestration.breaker import RedisBreaker
from stack.local import LocalFleet, start_emulator, start_valkey

FAKE_KEYS = {
    "ANTHROPIC_API_KEY": "fake-ant-bench-FAKEKEY-0123456789",
    "OPENAI_API_KEY": "sk-bench-FAKEKEY-0123456789abcdef",
    "GEMINI_API_KEY": "AIza-bench-FAKEKEY-0123456789",
}
THREE = ["claude", "openai", "gemini"]

#: The bench config: emulated providers, no cache, breaker thresholds a bench can set.
BENCH_CONFIG = """
key_prefix = "quorum:"
worker_concurrency = {concurrency}

[providers.claude]
kind = "anthropic"
model = "claude-sonnet-4-6"
priority = 1
timeout_s = {timeout}
price_in_per_mtok = 3.0
price_out_per_mtok = 15.0

[providers.openai]
kind = "openai"
model = "gpt-4.1-mini"
priority = 2
timeout_s = {timeout}
price_in_per_mtok = 0.4
price_out_per_mtok = 1.6

[providers.gemini]
kind = "gemini"
model = "gemini-2.5-flash"
priority = 3
timeout_s = {timeout}
price_in_per_mtok = 0.3
price_out_per_mtok = 2.5

[orchestration]
deadline_s = 60
min_responses = 2
cache_ttl_s = 0

[breaker]
window_s = 30
min_calls = {min_calls}
failure_rate = 0.5
consecutive_failures = {consecutive}
cooldown_s = 600
max_cooldown_s = 600
probe_lease_s = 10
"""


def quiet_profile(latency_ms: float, sigma: float = 0.0, seed: int | None = 7) -> dict[str, Any]:
    """An emulator profile: every provider at ``latency_ms`` (log-normal ``sigma``), no faults, no noise."""
    noise = {"wrong": 0.0, "near_miss": 0.0, "drop": 0.0, "swap": 0.0}
    defaults = {"latency_median_ms": latency_ms, "latency_sigma": sigma, "error_rate": 0.0, "noise": noise}
    return {"seed": seed, "defaults": defaults}


class Bench:
    """Valkey + emulator + worker processes + producer app; a context manager that cleans up."""

    def __init__(
        self,
        workers: int = 1,
        pool: str = "threads",
        concurrency: int = 32,
        profile: dict[str, Any] | None = None,
        *,
        consecutive_failures: int = 3,
        min_calls: int = 4,
        timeout_s: float = 10.0,
        log_level: str = "INFO",
        visibility_timeout_s: int | None = None,
    ) -> None:
        self.n_workers, self.pool, self.concurrency = workers, pool, concurrency
        self.profile = profile or quiet_profile(20.0)
        self.log_level = log_level
        self._config = BENCH_CONFIG.format(
            concurrency=concurrency, timeout=timeout_s, min_calls=min_calls, consecutive=consecutive_failures
        )
        if visibility_timeout_s is not None:  # a top-level key: before the first [table]
            self._config = f"visibility_timeout_s = {int(visibility_timeout_s)}\n{self._config}"
        self._stack = ExitStack()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._serial = 0

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Bench:
        old = signal.getsignal(signal.SIGTERM)
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            signal.signal(signal.SIGTERM, _raise_exit)
            self._stack.callback(signal.signal, signal.SIGTERM, old)
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def _start(self) -> None:
        self.workdir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="quorum-bench-")))
        self.redis_url = self._stack.enter_context(start_valkey(private=True))
        self.emulator: EmulatorHandle = self._stack.enter_context(start_emulator(self.profile))
        config = self.workdir / "quorum.toml"
        config.write_text(self._config)
        env = {  # no QUORUM_* from the caller's shell: this stack is self-contained
            **{k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")},
            **FAKE_KEYS,
            "QUORUM_CONFIG": str(config),
            "QUORUM_REDIS_URL": self.redis_url,
            "QUORUM_EMULATOR_URL": self.emulator.url,
            "QUORUM_FLEET_SECRET": secrets.token_hex(32),  # this stack's own fleet
        }
        self.fleet = LocalFleet(env, self.workdir)
        self._stack.callback(self.fleet.close)
        self.env, self.settings, self.app = self.fleet.env, self.fleet.settings, self.fleet.app
        self.redis = self.fleet.redis
        self.procs = self.fleet.procs
        self.start_workers(self.n_workers, self.pool, self.concurrency)

    def start_workers(self, n: int, pool: str, concurrency: int) -> None:
        """Start ``n`` worker processes with ``pool``/``concurrency`` and wait until each answers."""
        names = []
        for _ in range(n):
            self._serial += 1
            names.append(f"bench{self._serial}-{os.getpid()}")
        self.fleet.start_workers(
            names, pool=pool, concurrency=concurrency, queues="quorum", log_level=self.log_level
        )

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        """Stop every worker process group: ``sig`` (TERM: warm shutdown), KILL after 10 s."""
        self.fleet.stop_workers(sig)

    def log(self, name: str, chars: int = 4000) -> str:
        """The tail of a worker's log."""
        return self.fleet.log(name, chars)

    def worker_pids(self) -> list[int]:
        """Process ids of the running worker main processes."""
        return self.fleet.worker_pids()

    # -- jobs and state ----------------------------------------------------------------------

    def send(self, task: str = "quorum.extract", **kwargs: Any) -> AsyncResult:
        """Send a job by name with JSON kwargs, as a producer that does not import Quorum would."""
        return self.fleet.send(task, **kwargs)

    def timed(self, timeout: float = 60.0, task: str = "quorum.extract", **kwargs: Any) -> tuple[float, Any]:
        """Send one job and wait: ``(seconds, result)``; a failed job gives its exception as result."""
        start = time.perf_counter()
        job = self.send(task, **kwargs)
        try:
            result = job.get(timeout=timeout, propagate=True)
        except Exception as e:  # benchmarks report failures, they never stop on one
            result = e
        elapsed = time.perf_counter() - start
        job.forget()
        return elapsed, result

    def run_many(
        self, jobs: list[dict[str, Any]], in_flight: int = 8, timeout: float = 120.0
    ) -> list[tuple[float, Any]]:
        """Run ``jobs`` (kwargs of ``quorum.extract``) with at most ``in_flight`` outstanding;
        ``(seconds, result or exception)`` in input order."""
        with ThreadPoolExecutor(max_workers=max(1, in_flight), thread_name_prefix="bench-client") as pool:
            return list(pool.map(lambda kw: self.timed(timeout=timeout, **kw), jobs))

    def reset_state(self) -> None:
        """Forget Quorum's shared state (breakers, health, accuracy counts...)."""
        self.fleet.reset_state()

    def reset_breakers(self, providers: list[str]) -> None:
        """Delete ``quorum:{<provider>}:breaker*`` keys: every breaker closed, no history."""
        prefix = self.settings.key_prefix
        keys = [k for p in providers for k in self.redis.scan_iter(match=f"{prefix}{{{p}}}:breaker*")]
        if keys:
            self.redis.delete(*keys)

    def force_open(self, providers: list[str], cooldown_s: float = 600.0) -> None:
        """Open the shared breakers of ``providers`` now, for ``cooldown_s``."""
        breaker = RedisBreaker(self.redis, self.settings.key_prefix, self.settings.breaker)
        quiet = logging.getLogger("quorum.breaker")
        level, quiet.level = quiet.level, logging.ERROR  # the bench's own transition: not news
        try:
            for p in providers:
                breaker.force_open(p, time.time(), cooldown_s)
        finally:
            quiet.setLevel(level)


def _raise_exit(signum: int, frame: object) -> None:
    """SIGTERM → SystemExit, so ``with Bench(...)`` still stops everything it started."""
    raise SystemExit(128 + signum)
