"""Steps that share one Redis round trip (``scripts.Queued``): the entry's reads (job-id check,
fleet setting, breakers), the entry's spec store with its cache lookup, a failover hop's
post-call records with its publication guard (and its answer, count and cache entry when the
result backend is the state's server), an early-quorum chord call's records with its answer
(and its chord count), a job's guard with its answer, a job's answer with its count, and the
count of the call that completes a chord with the chord's results and claim.
Each test counts the round trips on a real Valkey (one write of
commands to the socket is one round trip) and checks that every step of the shared trip took
effect, so a step dropped from the pipeline fails here."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import redis
from celery import states
from celery.canvas import Signature
from redis.connection import Connection, ConnectionPool

from orchestration.attempts import AttemptDeps, run_attempt
from orchestration.breaker import BreakerState, ResilientBreaker, fast_fail_client
from orchestration.config import BreakerConfig, Settings
from orchestration.models import Attempt, Candidate, ProviderResult
from orchestration.state import FleetSetting, cache, read_health, write_fleet
from orchestration.state import job_records as jobs
from orchestration.state.costs import queue_record_job, totals
from orchestration.state.fleet import queue_read_fleet
from orchestration.state.scripts import execute_queued, queued_all
from workers import app as app_module
from workers.runtime import PostCall

PX = "quorum:"
NOW = 1_000_000.0
STRICT = BreakerConfig(consecutive_failures=2, min_calls=2, failure_rate=0.5)


class CountingConnection(Connection):
    """A connection that counts its writes: one write of packed commands is one round trip."""

    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).writes += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def counted(valkey_url: str) -> redis.Redis:
    """A client of the session's Valkey whose round trips are counted (flushed first)."""
    CountingConnection.writes = 0
    pool = ConnectionPool.from_url(valkey_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    client.flushall()
    client.ping()
    CountingConnection.writes = 0
    return client


def trips() -> int:
    n, CountingConnection.writes = CountingConnection.writes, 0
    return n


# --------------------------------------------------------------------------- entry


def test_the_entrys_reads_take_one_round_trip_and_each_answers(counted: redis.Redis) -> None:
    breaker = ResilientBreaker(counted, PX, STRICT)
    breaker.force_open("openai", NOW, cooldown_s=60)
    write_fleet(counted, PX, FleetSetting(strategy="consensus", order=["gemini", "claude"]))
    jobs.store_spec(counted, PX, "job-1", "digest-a", '{"x": 1}', 600)
    trips()

    held, fleet, snaps = execute_queued(
        counted,
        [
            jobs.queue_held_by_other(PX, "job-1", "digest-b"),
            queue_read_fleet(PX),
            breaker.queue_states(["openai", "claude"], NOW + 1),
        ],
    )
    assert trips() == 1
    assert held is True  # another request's spec holds the id
    assert (fleet.strategy, fleet.order) == ("consensus", ["gemini", "claude"])
    assert snaps["openai"].state is BreakerState.OPEN and snaps["claude"].state is BreakerState.CLOSED
    assert breaker.refusal("openai", NOW + 1, snaps["openai"]) is not None
    assert breaker.refusal("claude", NOW + 1, snaps["claude"]) is None

    held, fleet, snaps = execute_queued(
        counted,
        [
            jobs.queue_held_by_other(PX, "job-1", "digest-a"),
            queue_read_fleet(PX),
            breaker.queue_states([], NOW),
        ],
    )
    assert trips() == 1 and held is False and snaps == {}  # the same request: a redelivery


def _entry_spec(job_id: str, settings: Settings) -> Any:
    from orchestration.extraction import parse_request, prepare_extract

    request = parse_request((), {"text": "Dana from Northwind signs on 2025-03-14."})
    return prepare_extract(request, job_id=job_id, settings=settings, fleet=FleetSetting())


def test_the_entry_stores_its_spec_and_looks_up_the_cache_in_one_round_trip(counted: redis.Redis) -> None:
    """A miss: one round trip stores the spec and counts the miss; the job goes on (``start``).
    A hit: one more round trip claims it, counts it a hit and drops the spec this run stored."""
    from celery.exceptions import Ignore

    from workers import publication

    settings = Settings()
    rt = SimpleNamespace(redis=counted, prefix=PX, settings=settings)
    started: list[str] = []

    def enter(job_id: str) -> Any:
        spec = _entry_spec(job_id, settings)
        return publication.enter(rt, job_id, spec, f"digest-{job_id}", cached=lambda hit, s: {"hit": hit},  # type: ignore[arg-type]
                                 start=lambda rt, s: started.append(s.job_id))  # fmt: skip

    trips()
    with pytest.raises(Ignore):  # started: its last task answers
        enter("job-a")
    assert trips() == 1 and started == ["job-a"]
    assert counted.exists(jobs.spec_key(PX, "job-a")) and cache.hit_rate(counted, PX) == (0, 1)

    key = _entry_spec("job-b", settings).cache_key(PX, settings)  # the same request: the same key
    counted.set(key, json.dumps({"answer": 1}))
    trips()
    assert enter("job-b") == {"hit": {"answer": 1}}
    assert trips() == 2 and started == ["job-a"]
    assert jobs.published_by(counted, PX, "job-b") == "cache"
    assert not counted.exists(jobs.spec_key(PX, "job-b"))  # no task of job-b will read it
    assert cache.hit_rate(counted, PX) == (1, 1)

    # an entry that is not an answer is a miss, not a failed job
    for junk in ("{", "[1, 2]"):
        counted.set(f"{PX}cache:junk", junk)
        assert execute_queued(counted, [cache.queue_lookup(PX, f"{PX}cache:junk")]) == [None]
    trips()

    # a redelivered entry whose first run stored the spec (and sent its calls) keeps that spec
    jobs.store_spec(
        counted, PX, "job-c", "digest-job-c", _entry_spec("job-c", settings).model_dump_json(), 600
    )
    trips()
    assert enter("job-c") == {"hit": {"answer": 1}}
    assert trips() == 2 and counted.exists(jobs.spec_key(PX, "job-c"))


def test_an_entry_opens_and_stores_its_spec_in_one_round_trip_once_it_knows_the_fleet_setting(
    counted: redis.Redis,
) -> None:
    """The first entry of a process reads the fleet setting (checked path: reads, then the spec
    store); later ones prepare on it and store the spec with their reads. Another request's id,
    a job answered long ago, and a fleet setting changed meanwhile are handled as on the checked
    path: refused with nothing stored, refused with the spec dropped, the spec prepared again."""
    from celery.exceptions import Ignore

    from orchestration.extraction import parse_request, prepare_extract
    from workers import publication

    settings = Settings(orchestration={"cache_ttl_s": 0})
    rt = SimpleNamespace(
        redis=counted, prefix=PX, settings=settings, breaker=ResilientBreaker(counted, PX, STRICT)
    )
    publication._last_fleet.value = None
    kwargs = {"text": "Dana from Northwind signs on 2025-03-14.", "providers": ["openai", "claude"]}

    def open_job(job_id: str, **extra: Any) -> tuple[Any, Any]:
        task = SimpleNamespace(name="quorum.extract", request=SimpleNamespace(id=job_id))
        return publication.open_job(
            task, rt, (), {**kwargs, **extra},  # type: ignore[arg-type]
            parse=parse_request,
            providers=lambda r: ["openai"],
            prepare=lambda r, e: prepare_extract(r, job_id=e.job_id, settings=settings, fleet=e.fleet),
        )  # fmt: skip

    trips()
    entry, spec = open_job("job-o1")
    assert entry.stored is None and trips() == 1  # the checked path's reads; its spec goes in enter
    entry, spec = open_job("job-o2")
    assert trips() == 1  # reads and spec store together
    assert entry.stored is not None and entry.stored[2] is True and entry.stored[0] == spec
    assert "openai" in entry.breakers and spec.strategy == settings.orchestration.strategy
    assert jobs.load_spec(counted, PX, "job-o2") == spec.model_dump_json()
    again, _ = open_job("job-o2")  # a redelivered entry gets the spec stored the first time
    assert again.stored is not None and again.stored[2] is False and again.stored[0] == spec

    with pytest.raises(Ignore):  # another request with this id: refused, its spec left alone
        open_job("job-o2", text="another email")
    assert jobs.load_spec(counted, PX, "job-o2") == spec.model_dump_json()
    jobs.claim_publication(counted, PX, "job-o3", "call:job-o3.h0")
    with pytest.raises(Ignore):  # answered long ago (its spec expired): no spec left behind
        open_job("job-o3")
    assert jobs.load_spec(counted, PX, "job-o3") is None

    write_fleet(counted, PX, FleetSetting(strategy="consensus"))  # set-strategy, meanwhile
    trips()
    entry, spec = open_job("job-o4")
    assert trips() == 2 and spec.strategy == "consensus"  # prepared again on it, stored again
    assert json.loads(jobs.load_spec(counted, PX, "job-o4") or "{}")["strategy"] == "consensus"
    trips()
    entry, spec = open_job("job-o5")
    assert trips() == 1 and spec.strategy == "consensus"


def test_a_degraded_breaker_not_yet_due_reads_nothing_from_redis(counted: redis.Redis) -> None:
    clock = [0.0]
    gone = fast_fail_client("redis://127.0.0.1:1/0", timeout_s=0.1)
    breaker = ResilientBreaker(gone, PX, STRICT, retry_interval_s=60, clock=lambda: clock[0])
    breaker.force_open("openai", NOW, cooldown_s=60)  # Redis unreachable: degrades, opens locally
    assert breaker.degraded
    read = breaker.queue_states(["openai"], NOW + 1)
    (snaps,) = execute_queued(counted, [read])
    assert trips() == 0  # nothing queued: no round trip at all
    assert snaps["openai"].source == "local" and snaps["openai"].state is BreakerState.OPEN


# --------------------------------------------------------------------------- post-call


def _attempt(client: redis.Redis, breaker: ResilientBreaker, post: PostCall, task_id: str) -> Attempt:
    answer = ProviderResult(provider="openai", model="gpt", fields={}, tokens_in=100, tokens_out=10)
    deps = AttemptDeps(settings=Settings(), provider=lambda name: None, gates=[post.gate()], recorder=post,
                       clock=lambda: NOW)  # fmt: skip
    attempt = run_attempt(Candidate(provider="openai"), lambda provider, timeout: answer, label="openai",
                          task_id=task_id, deadline=NOW + 30, deps=deps)  # fmt: skip
    assert attempt.ok
    return attempt


def test_the_post_call_records_and_the_guard_share_one_round_trip(counted: redis.Redis) -> None:
    breaker = ResilientBreaker(counted, PX, STRICT)
    warm = PostCall(counted, PX, breaker, defer=True)  # loads the scripts (NOSCRIPT the first time)
    _attempt(counted, breaker, warm, "warm.h0")
    warm.flush(jobs.queue_claim_publication(PX, "warm", "call:warm.h0"))
    trips()
    post = PostCall(counted, PX, breaker, defer=True)
    _attempt(counted, breaker, post, "job-1.h0")
    assert trips() == 1  # the breaker's acquire only: the records wait for the guard
    assert read_health(counted, PX, "openai").successes == 1  # the warm-up's only
    trips()

    ran = post.flush(jobs.queue_claim_publication(PX, "job-1", "call:job-1.h0"))
    assert trips() == 1
    assert ran == [True]  # the guard was free: this hop publishes
    assert jobs.published_by(counted, PX, "job-1") == "call:job-1.h0"
    assert read_health(counted, PX, "openai").successes == 2
    assert totals(counted, PX, ["openai"])["openai"].calls == 2
    trips()
    assert post.flush() == [] and trips() == 0  # nothing left to send

    # another run of the job answered first: its guard says so, the records still land
    other = PostCall(counted, PX, breaker, defer=True)
    _attempt(counted, breaker, other, "job-1.h1")
    trips()
    assert other.flush(jobs.queue_claim_publication(PX, "job-1", "call:job-1.h1")) == [False]
    assert trips() == 1
    assert read_health(counted, PX, "openai").successes == 3
    # a redelivered first hop claims again (the same publisher)
    again = PostCall(counted, PX, breaker, defer=True)
    _attempt(counted, breaker, again, "job-1.h0")
    assert again.flush(jobs.queue_claim_publication(PX, "job-1", "call:job-1.h0")) == [True]
    assert totals(counted, PX, ["openai"])["openai"].calls == 3  # h0's cost counted once


def test_the_shared_round_trip_survives_a_redis_that_lost_its_scripts(counted: redis.Redis) -> None:
    breaker = ResilientBreaker(counted, PX, STRICT)
    post = PostCall(counted, PX, breaker, defer=True)
    _attempt(counted, breaker, post, "job-2.h0")
    counted.script_flush()
    assert post.flush(jobs.queue_claim_publication(PX, "job-2", "call:job-2.h0")) == [True]
    assert read_health(counted, PX, "openai").successes == 1
    assert totals(counted, PX, ["openai"])["openai"].calls == 1


def test_with_redis_gone_the_records_degrade_and_the_guard_is_left_to_the_caller() -> None:
    gone = fast_fail_client("redis://127.0.0.1:1/0", timeout_s=0.1)
    breaker = ResilientBreaker(gone, PX, STRICT)
    post = PostCall(gone, PX, breaker, defer=True)
    _attempt(gone, breaker, post, "job-3.h0")
    assert post.flush(jobs.queue_claim_publication(PX, "job-3", "call:job-3.h0")) == []
    assert breaker.degraded  # per-process breakers, as without the guard


def test_a_failover_hops_records_guard_answer_count_and_cache_entry_share_one_round_trip(
    counted: redis.Redis, valkey_url: str
) -> None:
    from workers.publication import publish_along

    app = app_module.create_app(Settings(redis_url=valkey_url))
    rt = SimpleNamespace(prefix=PX, settings=Settings(redis_url=valkey_url), state_on_backend=True)

    def along(job_id: str, by: str, answer: int) -> Any:
        count = queue_record_job(PX, job_id, 500, kind="extract", strategy="failover", outcome="ok")
        entry = cache.entry(f"{PX}cache:{job_id}", {"answer": answer}, 60)
        return publish_along(app, rt, job_id, {"answer": answer}, by=by, also=count, cache_entry=entry)  # type: ignore[arg-type]

    breaker = ResilientBreaker(counted, PX, STRICT)
    warm = PostCall(counted, PX, breaker, defer=True)
    _attempt(counted, breaker, warm, "warm.h0")
    counted.script_flush()  # a Redis that lost its scripts: loaded, and the round trip runs again
    assert warm.flush(along("warm", "call:warm.h0", 0)) == [True]
    post = PostCall(counted, PX, breaker, defer=True)
    _attempt(counted, breaker, post, "job-12.h0")
    trips()

    assert post.flush(along("job-12", "call:job-12.h0", 12)) == [True]
    assert trips() == 1
    meta = app.backend.get_task_meta("job-12", cache=False)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, {"answer": 12})
    assert jobs.published_by(counted, PX, "job-12") == "call:job-12.h0"
    assert counted.hget(f"{PX}{{fleet}}:jobs", "jobs") == b"2"  # the warm-up's and job-12's
    assert json.loads(counted.get(f"{PX}cache:job-12")) == {"answer": 12}
    assert read_health(counted, PX, "openai").successes == 2

    # another run of the job holds the guard: its answer is not stored, its records still land
    other = PostCall(counted, PX, breaker, defer=True)
    _attempt(counted, breaker, other, "job-12.h1")
    assert other.flush(along("job-12", "call:job-12.h1", 99)) == [False]
    assert app.backend.get_task_meta("job-12", cache=False)["result"] == {"answer": 12}
    assert json.loads(counted.get(f"{PX}cache:job-12")) == {"answer": 12}  # the publisher's answer
    assert counted.hget(f"{PX}{{fleet}}:jobs", "jobs") == b"2"  # the job is counted once
    assert read_health(counted, PX, "openai").successes == 3
    # a redelivered hop claims again (the same publisher); the stored answer is kept
    again = PostCall(counted, PX, breaker, defer=True)
    _attempt(counted, breaker, again, "job-12.h0")
    assert again.flush(along("job-12", "call:job-12.h0", 13)) == [True]
    assert app.backend.get_task_meta("job-12", cache=False)["result"] == {"answer": 12}

    rt.state_on_backend = False  # the backend is another server: the answer cannot ride along
    assert along("job-13", "call:job-13.h0", 13) is None


def test_a_publisher_without_records_claims_and_stores_in_one_round_trip(
    counted: redis.Redis, valkey_url: str
) -> None:
    from workers.publication import publish_success

    app = app_module.create_app(Settings(redis_url=valkey_url))
    rt = SimpleNamespace(
        prefix=PX, settings=Settings(redis_url=valkey_url), state_on_backend=True, redis=counted
    )

    def publish(job_id: str, by: str, answer: int) -> bool:
        entry = cache.entry(f"{PX}cache:{job_id}", {"answer": answer}, 60)
        return publish_success(app, rt, job_id, {"answer": answer}, by=by, hostname=None, cache_entry=entry)  # type: ignore[arg-type]

    assert publish("warm", "early", 0)  # loads the script
    trips()
    assert publish("job-14", "early", 14)
    assert trips() == 1  # the guard, the answer and its cache entry (the event is batched)
    assert app.backend.get_task_meta("job-14", cache=False)["result"] == {"answer": 14}
    assert jobs.published_by(counted, PX, "job-14") == "early"
    assert not publish("job-14", "body:job-14", 15)  # the chord body came second: nothing written
    assert app.backend.get_task_meta("job-14", cache=False)["result"] == {"answer": 14}
    assert json.loads(counted.get(f"{PX}cache:job-14")) == {"answer": 14}


# --------------------------------------------------------------------------- answer and count


def test_an_answer_and_the_jobs_count_share_one_round_trip(valkey_url: str) -> None:
    results = app_module.create_app(Settings(redis_url=valkey_url)).backend
    results.client.flushall()
    count = queue_record_job(PX, "job-4", 2142, kind="extract", strategy="failover", outcome="ok")
    results.store_result("job-4", {"answer": 1}, states.SUCCESS, also=count)  # loads the scripts
    meta = results.get_task_meta("job-4", cache=False)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, {"answer": 1})
    counters = results.client.hgetall(f"{PX}{{fleet}}:jobs")
    assert counters[b"jobs"] == b"1" and counters[b"by:extract:failover:ok"] == b"1"

    results.client.script_flush()  # a restarted Redis: both scripts come back, counted once
    results.store_result("job-4", {"answer": 2}, states.SUCCESS, also=count)
    assert results.get_task_meta("job-4", cache=False)["result"] == {"answer": 1}
    assert results.client.hgetall(f"{PX}{{fleet}}:jobs")[b"jobs"] == b"1"

    client = results.client
    pool = ConnectionPool.from_url(valkey_url, connection_class=CountingConnection)
    results.client = redis.Redis(connection_pool=pool)
    try:
        results.client.ping()  # the connection's own set-up is not the store's
        trips()
        results.store_result("job-5", {"answer": 3}, states.SUCCESS, also=queue_record_job(PX, "job-5", 1))
        assert trips() == 1
    finally:
        results.client = client
    assert client.hgetall(f"{PX}{{fleet}}:jobs")[b"jobs"] == b"2"


def test_an_answer_its_count_and_its_cache_entry_share_one_round_trip(valkey_url: str) -> None:
    results = app_module.create_app(Settings(redis_url=valkey_url)).backend
    results.client.flushall()
    client = results.client
    pool = ConnectionPool.from_url(valkey_url, connection_class=CountingConnection)
    results.client = redis.Redis(connection_pool=pool)
    try:
        results.client.ping()
        warm = queue_record_job(PX, "job-6", 1)
        results.store_result("job-6", {"warm": 1}, states.SUCCESS, also=warm)  # loads both scripts
        trips()
        count = queue_record_job(PX, "job-7", 1000, kind="extract", strategy="consensus", outcome="ok")
        also = queued_all(count, None, cache.entry(f"{PX}cache:k", {"answer": 7}, 60).queued())
        results.store_result("job-7", {"answer": 7}, states.SUCCESS, also=also)
        assert trips() == 1
    finally:
        results.client = client
    assert results.get_task_meta("job-7", cache=False)["result"] == {"answer": 7}
    assert client.hgetall(f"{PX}{{fleet}}:jobs")[b"jobs"] == b"2"  # the warm-up's and job-7's
    assert json.loads(client.get(f"{PX}cache:k")) == {"answer": 7} and 0 < client.ttl(f"{PX}cache:k") <= 60


def test_queued_steps_combined_keep_their_own_results_in_order(counted: redis.Redis) -> None:
    assert queued_all(None, None) is None
    assert cache.entry(f"{PX}cache:off", {"a": 1}, 0) is None  # caching off: nothing to send
    first = jobs.queue_claim_publication(PX, "job-8", "early")
    both = queued_all(first, cache.entry(f"{PX}cache:k2", {"b": 2}, 30).queued(), queue_read_fleet(PX))
    assert both is not None
    claimed, stored, fleet = execute_queued(counted, [both])[0]
    assert claimed is True and stored is None and isinstance(fleet, FleetSetting)
    assert jobs.published_by(counted, PX, "job-8") == "early"


# --------------------------------------------------------------------------- chord completion


class _Recorded(Signature):
    """A chord body that records what it is called with instead of running (the test's own type)."""

    calls: ClassVar[list[tuple[Any, ...]]] = []

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: Any = None) -> _Recorded:
        return cls(d, app=app)

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        type(self).calls.append(tuple(args or ()))


Signature.register_type(name="test_recorded")(_Recorded)


def test_the_call_that_completes_a_chord_reads_its_results_with_its_count(valkey_url: str) -> None:
    """The completing member's count, the header results and the claim come back in the round
    trip that counts it; then the body runs, then Celery's clean-up: two round trips
    (Celery made five: count, the group's saved result, the results, the claim's extension,
    the clean-up). The body gets the results in header order; a repeat of a member counts once."""
    from celery.app.task import Context

    results = app_module.create_app(Settings(redis_url=valkey_url)).backend
    results.client.flushall()
    body = {"task": "quorum.merge", "args": [], "kwargs": {}, "options": {}, "subtask_type": "test_recorded"}
    group, _Recorded.calls = "job-12-grp", []

    def done(i: int, group: str = group) -> None:
        request = Context(id=f"job-12.c{i}", group=group, group_index=i, chord=body, ignore_result=True)
        results.mark_as_done(f"job-12.c{i}", {"answer": i}, request=request)

    results.set_chord_size("warm-grp", 1)
    done(0, "warm-grp")  # loads the scripts
    results.set_chord_size(group, 3)
    _Recorded.calls = []
    done(2)
    done(0)
    done(0)  # redelivered: counted once
    assert _Recorded.calls == []
    client = results.client
    results.client = redis.Redis(
        connection_pool=ConnectionPool.from_url(valkey_url, connection_class=CountingConnection)
    )
    try:
        results.client.ping()
        trips()
        done(1)
        assert trips() == 2
    finally:
        results.client = client
    assert _Recorded.calls == [([{"answer": 0}, {"answer": 1}, {"answer": 2}],)]
    assert client.get(results.get_key_for_group(group, ".c")) == b"done"  # cleaned up: never sent again
    done(1)
    assert len(_Recorded.calls) == 1


def test_a_chord_call_that_counted_itself_is_not_counted_again_by_the_tracer(valkey_url: str) -> None:
    """A chord call counts itself in its own round trip (``queue_chord_part``, with its post-call
    records); Celery's tracer then completes the chord from that reply: no count of its own, the
    body run and the clean-up only. A call whose count did not run is counted by the tracer."""
    from celery.app.task import Context

    results = app_module.create_app(Settings(redis_url=valkey_url)).backend
    results.client.flushall()
    body = {"task": "quorum.merge", "args": [], "kwargs": {}, "options": {}, "subtask_type": "test_recorded"}
    group = "job-15-grp"

    def request(i: int, group: str = group) -> Any:
        return Context(id=f"job-15.c{i}", group=group, group_index=i, chord=body, ignore_result=True)

    results.set_chord_size("warm-15", 1)
    warm = request(0, "warm-15")
    execute_queued(results.client, [results.queue_chord_part(warm, {"answer": 0})])  # loads the script
    results.mark_as_done("job-15.c0", {"answer": 0}, request=warm)
    results.set_chord_size(group, 3)
    _Recorded.calls = []
    results.mark_as_done("job-15.c0", {"answer": 0}, request=request(0))  # the tracer counts it
    client = results.client
    results.client = counted = redis.Redis(
        connection_pool=ConnectionPool.from_url(valkey_url, connection_class=CountingConnection)
    )
    try:
        counted.ping()
        for i in (1, 2):
            member = request(i)
            trips()
            assert execute_queued(counted, [results.queue_chord_part(member, {"answer": i})])[0][0] == i + 1
            assert trips() == 1
            results.mark_as_done(f"job-15.c{i}", {"answer": i}, request=member)
            assert trips() == (0 if i == 1 else 1)  # the last: the clean-up after the body, only
    finally:
        results.client = client
    assert _Recorded.calls == [([{"answer": 0}, {"answer": 1}, {"answer": 2}],)]
    assert client.get(results.get_key_for_group(group, ".c")) == b"done"


def test_a_chord_whose_group_was_saved_completes_celerys_way(valkey_url: str) -> None:
    """A header with a saved group (nested groups: Quorum sends none) is joined by Celery's own
    method: the member is counted once, the claim taken over, the body sent once."""
    from celery.app.task import Context
    from celery.result import AsyncResult, GroupResult

    results = app_module.create_app(Settings(redis_url=valkey_url)).backend
    results.client.flushall()
    body = {"task": "quorum.merge", "args": [], "kwargs": {}, "options": {}, "subtask_type": "test_recorded"}
    group, _Recorded.calls = "job-13-grp", []
    members = [AsyncResult(f"job-13.c{i}", app=results.app) for i in range(2)]
    results.set_chord_size(group, 2)
    results.save_group(group, GroupResult(group, members, app=results.app))
    for i in range(2):
        # Celery's join reads each member's stored result: a saved group's members store theirs
        request = Context(id=f"job-13.c{i}", group=group, group_index=i, chord=body, ignore_result=False)
        results.mark_as_done(f"job-13.c{i}", {"answer": i}, request=request)
    assert _Recorded.calls == [([{"answer": 0}, {"answer": 1}],)]
    joined = results.get_key_for_group(group, ".j")
    assert results.client.get(
        results.get_key_for_group(group, ".c")
    ) == b"done" and not results.client.exists(joined)


# --------------------------------------------------------------------------- consensus


def test_an_answer_is_recorded_and_the_publisher_read_in_one_step(counted: redis.Redis) -> None:
    jobs.add_answer(counted, PX, "warm", Attempt(provider="openai", label="openai"))  # loads the script
    trips()
    answer = Attempt(provider="openai", label="openai", task_id="job-6.c0")
    so_far, by = jobs.add_answer(counted, PX, "job-6", answer, with_publisher=True)
    assert trips() == 1 and [a.task_id for a in so_far] == ["job-6.c0"] and by is None
    jobs.claim_publication(counted, PX, "job-6", "early")
    trips()
    so_far, by = jobs.add_answer(counted, PX, "job-6", answer.model_copy(update={"task_id": "job-6.c1"}),
                                 with_publisher=True)  # fmt: skip
    assert trips() == 1 and len(so_far) == 2 and by == "early"
    # a redelivered header task records again: one outcome per task id, its last
    again = answer.model_copy(update={"label": "openai#2"})
    so_far = jobs.add_answer(counted, PX, "job-6", again)
    assert sorted((a.task_id, a.label) for a in so_far) == [("job-6.c0", "openai#2"), ("job-6.c1", "openai")]
    assert counted.ttl(f"{PX}job:{{job-6}}:answers") > 0


def test_a_chord_calls_post_call_records_and_its_answer_share_one_round_trip(counted: redis.Redis) -> None:
    breaker = ResilientBreaker(counted, PX, STRICT)
    warm = PostCall(counted, PX, breaker, defer=True)  # loads the scripts (NOSCRIPT the first time)
    _attempt(counted, breaker, warm, "warm.c0")
    warm.flush(jobs.queue_add_answer(PX, "warm", Attempt(provider="openai", label="openai")))
    trips()
    post = PostCall(counted, PX, breaker, defer=True)
    _attempt(counted, breaker, post, "job-8.c0")
    assert trips() == 1  # the breaker's acquire only: the records wait for the answer
    trips()

    first = Attempt(provider="openai", label="openai", task_id="job-8.c0")
    ran = post.flush(jobs.queue_add_answer(PX, "job-8", first))
    assert trips() == 1
    assert len(ran) == 1
    answers, by = ran[0]
    assert answers.recorded == 1 and [a.task_id for a in answers.attempts] == ["job-8.c0"] and by is None
    assert read_health(counted, PX, "openai").successes == 2
    assert totals(counted, PX, ["openai"])["openai"].calls == 2

    # the next call of the chord sees both answers, and who published early
    jobs.claim_publication(counted, PX, "job-8", "early")
    other = PostCall(counted, PX, breaker, defer=True)
    _attempt(counted, breaker, other, "job-8.c1")
    trips()
    second = first.model_copy(update={"task_id": "job-8.c1", "label": "openai#2"})
    ((answers, by),) = other.flush(jobs.queue_add_answer(PX, "job-8", second))
    assert trips() == 1
    assert [a.task_id for a in answers.attempts] == ["job-8.c0", "job-8.c1"] and by == "early"
    assert read_health(counted, PX, "openai").successes == 3

    counted.script_flush()  # a restarted Redis: the scripts come back, the answer is recorded once
    last = PostCall(counted, PX, breaker, defer=True)
    _attempt(counted, breaker, last, "job-8.c2")
    ((answers, _),) = last.flush(
        jobs.queue_add_answer(PX, "job-8", first.model_copy(update={"task_id": "job-8.c2"}))
    )
    assert [a.task_id for a in answers.attempts] == ["job-8.c0", "job-8.c1", "job-8.c2"]
    assert counted.llen(f"{PX}job:{{job-8}}:answers") == 3
    assert read_health(counted, PX, "openai").successes == 4


def _chord_job(valkey_url: str, job_id: str) -> tuple[Any, Any]:
    """A runtime on the session's Valkey and a consensus job of three (early quorum on)."""
    from orchestration.extraction import parse_request, prepare_extract
    from workers.runtime import build_runtime

    settings = Settings(redis_url=valkey_url)
    request = parse_request(
        (), {"text": "hello", "strategy": "consensus", "providers": ["openai", "claude", "gemini"]}
    )
    job = prepare_extract(request, job_id=job_id, settings=settings, fleet=FleetSetting(), now=NOW)
    assert job.early_quorum and job.strategy == "consensus"
    return build_runtime(settings), job


def _answers(client: redis.Redis, job_id: str) -> list[str | None]:
    """The task ids of the outcomes recorded for ``job_id``'s chord, as stored."""
    return [
        Attempt.model_validate_json(raw).task_id
        for raw in client.lrange(f"{PX}job:{{{job_id}}}:answers", 0, -1)
    ]


def test_an_early_quorum_chord_call_sends_its_records_with_its_answer(
    counted: redis.Redis, valkey_url: str
) -> None:
    from workers.tasks import _maybe_publish_early

    rt, job = _chord_job(valkey_url, "job-10")
    rt.redis = rt.fast_redis = counted  # every round trip of the call is counted
    breaker = ResilientBreaker(counted, PX, STRICT)
    warm = PostCall(counted, PX, breaker, defer=True)  # loads the scripts (NOSCRIPT the first time)
    warm.flush(jobs.queue_add_answer(PX, "warm", _attempt(counted, breaker, warm, "warm.c0")))
    post = PostCall(counted, PX, breaker, defer=True)
    attempt = _attempt(counted, breaker, post, "job-10.c0")
    trips()
    _maybe_publish_early(rt, job, attempt, [], "w1", post)
    assert trips() == 1  # the records and the answer; one answer of three: nothing more to read
    assert _answers(counted, "job-10") == ["job-10.c0"]
    assert read_health(counted, PX, "openai").successes == 2
    trips()
    assert post.flush() == [] and trips() == 0  # the call's own flush finds nothing left


def test_an_early_quorum_chord_call_sends_its_chord_count_with_its_records_and_answer(
    counted: redis.Redis, valkey_url: str
) -> None:
    from celery.app.task import Context

    from workers.tasks import _maybe_publish_early

    rt, job = _chord_job(valkey_url, "job-16")
    rt.redis = rt.fast_redis = counted
    results = app_module.create_app(Settings(redis_url=valkey_url)).backend
    breaker = ResilientBreaker(counted, PX, STRICT)
    body = {"task": "quorum.merge", "args": [], "kwargs": {}, "options": {}, "subtask_type": "test_recorded"}
    warm_request = Context(id="warm16.c0", group="warm16-grp", group_index=0, chord=body, ignore_result=True)
    warm = PostCall(counted, PX, breaker, defer=True)
    answer = _attempt(counted, breaker, warm, "warm16.c0")
    results.set_chord_size("job-16-grp", 3)
    warm.flush(
        queued_all(jobs.queue_add_answer(PX, "warm16", answer), results.queue_chord_part(warm_request, {}))
    )
    request = Context(id="job-16.c0", group="job-16-grp", group_index=0, chord=body, ignore_result=True)
    post = PostCall(counted, PX, breaker, defer=True)
    attempt = _attempt(counted, breaker, post, "job-16.c0")
    trips()
    count = results.queue_chord_part(request, attempt.model_dump(mode="json"))
    _maybe_publish_early(rt, job, attempt, [], "w1", post, count)
    assert trips() == 1  # the records, the answer and the chord count
    assert _answers(counted, "job-16") == ["job-16.c0"]
    assert counted.zcard(results.get_key_for_group("job-16-grp", ".j")) == 1
    assert request.quorum_chord_part.reply[0] == 1  # the tracer completes from this reply


def test_an_early_quorum_chord_call_whose_records_went_alone_sends_its_answer_itself(valkey_url: str) -> None:
    from workers.tasks import _maybe_publish_early

    rt, job = _chord_job(valkey_url, "job-11")
    rt.redis.delete(f"{PX}job:{{job-11}}:answers")
    gone = fast_fail_client("redis://127.0.0.1:1/0", timeout_s=0.1)
    breaker = ResilientBreaker(gone, PX, STRICT)
    post = PostCall(gone, PX, breaker, defer=True)
    attempt = _attempt(gone, breaker, post, "job-11.c0")
    _maybe_publish_early(rt, job, attempt, [], "w1", post)
    assert breaker.degraded  # the records went without the answer
    assert _answers(rt.redis, "job-11") == ["job-11.c0"]


def test_the_chord_bodys_guard_count_and_grades_share_one_round_trip(counted: redis.Redis) -> None:
    from orchestration.state.accuracy import queue_grades, read_counts

    updates = [("openai", "date", True), ("claude", "date", False)]
    execute_queued(counted, [queue_record_job(PX, "warm", 1), queue_grades(PX, updates, once="warm")])
    trips()  # the scripts are loaded
    assert queue_grades(PX, []) is None
    steps = [jobs.queue_claim_publication(PX, "job-7", "body:job-7.m"), queue_record_job(PX, "job-7", 5),
             queue_grades(PX, updates, once="job-7", once_ttl_s=600)]  # fmt: skip
    assert execute_queued(counted, steps) == [True, True, True]
    assert trips() == 1
    counts = read_counts(counted, PX, ["openai", "claude"], ["date"])
    assert counts == {("openai", "date"): (2, 2), ("claude", "date"): (0, 2)}  # warm-up's and job-7's
    marker = f"{PX}{{openai}}:accuracy:once:job-7"  # beside the counters, in the provider's slot
    assert 0 < counted.ttl(marker) <= 600
    # the body run again (redelivered): its guard still holds, nothing is counted or graded twice
    assert execute_queued(counted, steps) == [True, False, False]
    assert read_counts(counted, PX, ["openai", "claude"], ["date"]) == counts


def test_the_entry_reads_the_breakers_its_first_step_may_need() -> None:
    from orchestration.candidates import candidate_providers
    from orchestration.extraction import parse_request

    settings = Settings()
    enabled = settings.enabled_providers()
    text = {"text": "hello"}

    def providers(**kwargs: Any) -> list[str]:
        request = parse_request((), {**text, **kwargs})
        return candidate_providers(request, settings, failover=request.strategy == "failover")

    assert providers(strategy="failover", providers=["gemini", "claude"]) == ["gemini"]  # the first hop's
    assert providers(strategy="consensus", providers=["gemini", "claude"]) == ["gemini", "claude"]
    assert providers(providers=["gemini", "claude"]) == ["gemini", "claude"]  # the fleet may say either
    assert providers() == enabled  # the fleet's order decides: every enabled provider


def test_recorded_answers_are_counted_without_parsing_and_parsed_once() -> None:
    """A chord call with too few answers for a quorum, or the last one in, only counts them."""
    first = Attempt(provider="openai", label="openai", task_id="job-9.c0")
    again = first.model_copy(update={"label": "openai#2"})
    assert jobs.Answers([b"{not json", b"{nor this"]).recorded == 2  # never parsed
    answers = jobs.Answers([first.model_dump_json().encode(), again.model_dump_json().encode()])
    assert answers.recorded == 2 and [a.label for a in answers.attempts] == ["openai#2"]
    assert answers.attempts is answers.attempts
