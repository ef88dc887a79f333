"""workers.backend: the chord claim script on a real Valkey (a header task that claimed the body's
dispatch and runs again takes the claim over), and the Celery internals it replaces, recorded so
that a new Celery release fails here instead of in a worker."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import pytest
import redis
from celery import states
from celery.backends import base as celery_base
from celery.backends import redis as celery_redis

from orchestration.config import Settings
from workers import app as app_module
from workers import backend

#: sha256 of Celery 5.7's chord script and of the method that runs it, as workers.backend copies them.
RECORDED = {
    "CHORD_PART_RETURN_LUA": "c7563aa7add4c2c6dcb13429562de5647e2df90bdc2fb28c0e1458665581095f",
    "on_chord_part_return": "ed0b7a2ee79f6e96b2139320ead0779a87801c5208a36b6a98eb61d499dc9ec5",
}
GROUP = "celery-taskset-meta-g"
KEYS = [f"{GROUP}.j", f"{GROUP}.t", f"{GROUP}.s", f"{GROUP}.d", GROUP, f"{GROUP}.c"]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_celerys_chord_script_and_its_caller_are_the_ones_the_backend_was_written_for() -> None:
    found = {
        "CHORD_PART_RETURN_LUA": _sha(celery_redis.CHORD_PART_RETURN_LUA),
        "on_chord_part_return": _sha(inspect.getsource(celery_redis.RedisBackend.on_chord_part_return)),
    }
    assert found == RECORDED, (
        "Celery changed its Redis chord handling: review workers/backend.py against the new Celery "
        "before widening the pin in pyproject.toml"
    )


def _part(script: Any, tid: str, index: int, token: str) -> tuple[int, bool]:
    """One header task's return (expiry 60 s, claim 6 s as Celery's): (ready count, claimed)."""
    ready, _, _, claimed = script(keys=KEYS, args=[tid, f"[1, {tid!r}]", 1, index, 60, 60, 6, token])
    return int(ready), bool(claimed)


@pytest.mark.parametrize("ours", [True, False], ids=["quorum", "celery"])
def test_the_claimant_that_runs_again_takes_the_claim_over(valkey_redis: redis.Redis, ours: bool) -> None:
    script = valkey_redis.register_script(
        backend.CHORD_PART_RETURN_LUA if ours else celery_redis.CHORD_PART_RETURN_LUA
    )
    valkey_redis.set(f"{GROUP}.s", 2)
    assert _part(script, "job.c0", 0, "t0") == (1, False)
    assert _part(script, "job.c1", 1, "t1") == (2, True)  # completes the chord: claims the body
    # Its worker dies before sending the body; the task runs again, counted once.
    assert _part(script, "job.c1", 1, "t1-again") == (2, ours)  # Celery: nobody sends the body
    if ours:
        assert valkey_redis.get(f"{GROUP}.c") == b"t1-again"
    # Another member's repeat never takes a claim it did not hold.
    assert _part(script, "job.c0", 0, "t0-again") == (2, False)


def test_a_finished_chord_is_never_claimed_again(valkey_redis: redis.Redis) -> None:
    script = valkey_redis.register_script(backend.CHORD_PART_RETURN_LUA)
    valkey_redis.set(f"{GROUP}.s", 1)
    assert _part(script, "job.c0", 0, "t0") == (1, True)
    valkey_redis.set(f"{GROUP}.c", "done")  # what Celery's cleanup leaves once the body is sent
    assert _part(script, "job.c0", 0, "t0-again") == (-1, False)


def test_the_app_selects_the_backend_and_leaves_celerys_class_alone() -> None:
    app = app_module.create_app(Settings(redis_url="redis://127.0.0.1:6399/3"))
    assert type(app.backend) is backend.ResultBackend
    assert app.backend.connparams["port"] == 6399 and app.backend.connparams["db"] == 3
    assert celery_redis.RedisBackend._chord_part_return_script is not (
        backend.ResultBackend._chord_part_return_script
    )


#: sha256 of Celery 5.7's ``BaseKeyValueStoreBackend._store_result``, which ``ResultBackend``
#: runs as one script.
STORE_RESULT_SHA = "c0214af4c66e299967b762a65db7a3ebe0518ad2275902bc1712f7422ef7ed77"


def test_celerys_store_result_is_the_one_the_backend_was_written_for() -> None:
    source = inspect.getsource(celery_base.BaseKeyValueStoreBackend._store_result)
    assert _sha(source) == STORE_RESULT_SHA, (
        "Celery changed how it stores a result: review ResultBackend._store_result against it"
    )


def _backend(url: str) -> backend.ResultBackend:
    return app_module.create_app(Settings(redis_url=url)).backend


def test_a_result_is_stored_published_and_never_overwrites_a_success(valkey_url: str) -> None:
    results = _backend(valkey_url)
    results.client.flushall()
    pubsub = results.client.pubsub()
    pubsub.subscribe(results.get_key_for_task("t1"))
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    results.store_result("t1", {"answer": 1}, states.STARTED)
    assert results.get_task_meta("t1", cache=False)["status"] == states.STARTED
    message = pubsub.get_message(timeout=1)
    assert message is not None and b'"STARTED"' in message["data"]
    results.store_result("t1", {"answer": 2}, states.SUCCESS)
    results.store_result("t1", ValueError("late"), states.FAILURE)  # a redelivered run
    meta = results.get_task_meta("t1", cache=False)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, {"answer": 2})
    assert 0 < results.client.ttl(results.get_key_for_task("t1")) <= results.expires
    pubsub.close()


def test_a_chord_header_task_is_counted_once_and_stores_no_result(valkey_url: str) -> None:
    """Quorum's header tasks ignore their result: the chord counts each once (a redelivered one
    too) and keeps its outcome for the body; nothing is stored under the task's own id."""
    from celery.app.task import Context

    results = _backend(valkey_url)
    results.client.flushall()
    group = "job-grp"
    results.set_chord_size(group, 2)  # two members: the body is not due after one
    body = {"task": "quorum.merge", "args": [], "kwargs": {}, "options": {}, "subtask_type": None}
    request = Context(id="job.c0", group=group, group_index=0, chord=body, ignore_result=True)
    results.mark_as_done("job.c0", {"answer": 1}, request=request)
    results.mark_as_done("job.c0", {"answer": 2}, request=request)  # redelivered
    assert not results.client.exists(results.get_key_for_task("job.c0"))
    joined = results.get_key_for_group(group, ".j")
    counted = results.client.zcard(joined) if results._chord_zset else results.client.llen(joined)
    assert counted == 1


#: sha256 of the Celery 5.7 methods ``ResultBackend`` narrows: building a chord's GroupResult
#: (``apply_chord``) and every waiter's subscription (``add_pending_result``) subscribe to results
#: no worker reads; ``set_chord_size`` is two writes, sent as one round trip here.
CHORD_SENDING = {
    "apply_chord": "4a1df3fa0b01c7cd88b9338c1aa58db54d582284523fef5dc124f6d5ecaecf70",
    "set_chord_size": "953182a90482700daa424048a250056cdbacbec38b3bd0f52c9ab5ab8cd6e1dc",
    "add_pending_result": "a8fb813ac6ddf04d97bb3a2d58609cb37a5d87f89eb0f3e878960043a0491955",
}


def test_celerys_chord_sending_is_the_one_the_backend_was_written_for() -> None:
    from celery.backends import asynchronous

    found = {
        "apply_chord": _sha(inspect.getsource(celery_redis.RedisBackend.apply_chord)),
        "set_chord_size": _sha(inspect.getsource(celery_redis.RedisBackend.set_chord_size)),
        "add_pending_result": _sha(inspect.getsource(asynchronous.AsyncBackendMixin.add_pending_result)),
    }
    assert found == CHORD_SENDING, "Celery changed how a chord is sent: review ResultBackend against it"


def test_a_worker_sending_a_chord_subscribes_to_no_result(valkey_url: str) -> None:
    """In a worker (``get()`` refused) a chord's header results are not subscribed to: nothing
    would read them. A producer still subscribes when it waits (``then``/``get``)."""
    from celery import chord
    from celery._state import _set_task_join_will_block, task_join_will_block

    app = app_module.create_app(Settings(redis_url=valkey_url))
    results = app.backend
    results.client.flushall()
    header = [app.signature("quorum.call", args=(i,), task_id=f"job.c{i}") for i in range(2)]
    body = app.signature("quorum.merge", task_id="job.m")
    was = task_join_will_block()
    _set_task_join_will_block(True)
    try:
        chord(header, body).apply_async()
        assert not results.result_consumer.subscribed_to
        assert results.client.get(results.get_key_for_group(_group_of(results), ".s")) == b"2"
    finally:
        _set_task_join_will_block(was)
    waiter = app.AsyncResult("job.c0")
    waiter.then(lambda *a: None)  # a producer's waiter (not weak): subscribed as before
    assert results.result_consumer.subscribed_to == {results.get_key_for_task("job.c0")}
    results.result_consumer.cancel_for("job.c0")


def _group_of(results: backend.ResultBackend) -> str:
    """The id of the one chord sent to an empty Redis (from its size key)."""
    (key,) = results.client.keys("celery-taskset-meta-*.s")
    return key.decode().removeprefix("celery-taskset-meta-").removesuffix(".s")
