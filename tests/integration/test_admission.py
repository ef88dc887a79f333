"""A call whose job's entry read its breaker CLOSED a moment ago starts without the breaker's
``acquire`` round trip; any other call acquires as before. Real workers, real Valkey: the
``acquire`` runs of the breaker script are counted with MONITOR."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from orchestration.breaker import BreakerState, RedisBreaker
from orchestration.config import BreakerConfig
from orchestration.data import load_emails
from tests.integration.fleet import FLEET_SECRET, Fleet
from workers.canvas import failover_attempt

pytestmark = pytest.mark.integration

EMAIL = load_emails()[0]


class Acquires:
    """Follows MONITOR and keeps the breaker script's ``acquire`` runs, by provider."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[str] = []
        self._marker = f"admission-{uuid.uuid4().hex}"
        self._attached = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def _follow(self) -> None:
        client = redis.Redis.from_url(self.url)
        with client.monitor() as monitor:
            for entry in monitor.listen():
                command = str(entry.get("command", ""))
                if self._marker in command:
                    self._attached.set()
                if self._stop.is_set() and self._attached.is_set():
                    return
                if command.startswith("EVALSHA") and " acquire " in command:
                    self.seen.append(command)

    def __enter__(self) -> Acquires:
        self._thread.start()
        pinger = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while not self._attached.wait(0.05):  # MONITOR echoes our marker once it is attached
            pinger.echo(self._marker)
            assert time.monotonic() < deadline, "MONITOR did not attach"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        redis.Redis.from_url(self.url).echo(self._marker)
        self._thread.join(5)

    def of(self, provider: str) -> int:
        """How many acquires of ``provider`` ran (each carries its own lease id: an EVALSHA that
        redis-py re-sends after NOSCRIPT, e.g. after the fixture flushed the scripts, is one)."""
        key = f"quorum:{{{provider}}}:breaker "
        return len({c for c in self.seen if key in c})


@pytest.fixture
def acquires(clean: Fleet) -> Iterator[Acquires]:
    with Acquires(clean.redis_url) as a:
        yield a


def extract(fleet: Fleet, **kw: object):
    kw.setdefault("text", EMAIL.text)
    kw.setdefault("use_cache", False)
    return fleet.send(**kw)


def test_the_first_calls_on_a_fresh_closed_read_do_not_acquire(clean: Fleet, emulator, acquires) -> None:
    failover = extract(clean, strategy="failover", providers=["claude", "openai"]).get(timeout=30)
    assert failover["chosen"] == "claude"
    three = ["claude", "openai", "gemini"]
    consensus = extract(clean, strategy="consensus", providers=three, early_quorum=False).get(timeout=30)
    assert {a["provider"] for a in consensus["attempts"] if a["ok"]} == set(three)
    emulator.set_down("claude")  # the next job's second hop: read CLOSED by the errback that plans it
    moved = extract(clean, strategy="failover", providers=["claude", "gemini"]).get(timeout=30)
    assert moved["chosen"] == "gemini"
    time.sleep(0.2)  # MONITOR lags the replies a little
    assert acquires.of("claude") == 0  # three calls, each on its entry's fresh CLOSED read
    assert acquires.of("openai") == 0
    assert acquires.of("gemini") == 0  # the later hop: on the errback's fresh CLOSED read
    # the calls admitted on the read were recorded as ordinary calls
    client = redis.Redis.from_url(clean.redis_url)
    assert client.zcard("quorum:{claude}:breaker:calls") == 3
    assert client.zcard("quorum:{claude}:breaker:failures") == 1


def test_a_hop_past_an_open_breaker_starts_on_the_entrys_read(clean: Fleet, emulator, acquires) -> None:
    client = redis.Redis.from_url(clean.redis_url)
    RedisBreaker(client, "quorum:", BreakerConfig()).force_open("claude", time.time(), cooldown_s=60)
    before = emulator.requests("claude")
    moved = extract(clean, strategy="failover", providers=["claude", "openai"]).get(timeout=30)
    assert moved["chosen"] == "openai"
    assert [a["provider"] for a in moved["attempts"]] == ["claude", "openai"]  # claude skipped
    time.sleep(0.2)  # MONITOR lags the replies a little
    assert emulator.requests("claude") == before
    assert acquires.of("openai") == 0  # the entry read it CLOSED when it planned past claude
    assert acquires.of("claude") == 0


def test_a_breaker_opened_after_the_entry_refuses_a_call_on_a_stale_read(
    clean: Fleet, emulator, acquires
) -> None:
    job = extract(clean, strategy="failover", providers=["claude"])
    job.get(timeout=30)  # the job's spec is stored; its entry read claude CLOSED
    client = redis.Redis.from_url(clean.redis_url)
    breaker = RedisBreaker(client, "quorum:", BreakerConfig())
    breaker.force_open("claude", time.time(), cooldown_s=60)
    before = emulator.requests("claude")
    # the job's call, sent as the entry would have sent it, read CLOSED a minute ago
    key = FLEET_SECRET.encode()
    stale = time.time() - 60
    failover_attempt(clean.app, key, job.id, 0, "claude", 7, [], closed_at=stale).apply_async()
    deadline = time.monotonic() + 15
    while acquires.of("claude") < 1:
        assert time.monotonic() < deadline, "the call did not acquire its breaker"
        time.sleep(0.05)
    time.sleep(0.5)  # the refused call (had it gone through) would have reached the emulator by now
    assert emulator.requests("claude") == before
    assert breaker.state("claude", time.time()).state is BreakerState.OPEN


def test_a_generation_chords_candidates_do_not_acquire(clean: Fleet, emulator, acquires) -> None:
    three = ["claude", "openai", "gemini"]
    result = clean.send("quorum.generate", prompt="Write a function that adds two integers", providers=three,
                        selector="majority", use_cache=False).get(timeout=30)  # fmt: skip
    assert result["calls"] == 3
    time.sleep(0.2)  # MONITOR lags the replies a little
    assert sum(acquires.of(p) for p in three) == 0
    client = redis.Redis.from_url(clean.redis_url)
    recorded = [client.zcard(f"quorum:{{{p}}}:breaker:calls") for p in three]
    assert recorded == [1, 1, 1], f"breaker calls {recorded}; workers' warnings:\n{warnings(clean)}"


def warnings(fleet: Fleet) -> str:
    """The WARNING and worse lines of every worker's log (e.g. a breaker degraded to per-process
    state, whose outcomes stay in the worker), for an assertion's message."""
    lines = []
    for path in sorted(fleet.logdir.glob("*.log")):
        text = path.read_text(errors="replace")
        lines += [f"{path.stem}: {x}" for x in text.splitlines() if "WARNING/" in x or "ERROR/" in x]
    return "\n".join(lines[-40:]) or "(none)"
