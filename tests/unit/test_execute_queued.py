"""``execute_queued`` on a Redis that has some of a round trip's scripts and not the others
(a fresh or restarted server, scripts flushed): what ran once must not run again."""

from __future__ import annotations

from typing import Any

import redis

from orchestration.state.scripts import Queued, execute_queued, sha_of

COUNT = "return redis.call('INCR', KEYS[1])"
COUNT_TWICE = "return redis.call('INCRBY', KEYS[1], 2)"


def counting(source: str, key: str) -> Queued[int]:
    """One EVALSHA of ``source`` on ``key``: its reply is the counter after it ran."""

    def queue(pipe: Any) -> int:
        pipe.evalsha(sha_of(source), 1, key)
        return 1

    return Queued(queue, lambda replies: int(replies[0]), (source,))


def plain(key: str) -> Queued[int]:
    """A command with no script: never NOSCRIPT."""

    def queue(pipe: Any) -> int:
        pipe.incr(key)
        return 1

    return Queued(queue, lambda replies: int(replies[0]))


def test_only_the_commands_that_answered_noscript_run_again(valkey_redis: redis.Redis) -> None:
    valkey_redis.script_flush()
    valkey_redis.script_load(COUNT)  # this one is loaded, COUNT_TWICE is not
    items = [counting(COUNT, "a"), counting(COUNT_TWICE, "b"), plain("c"), counting(COUNT, "d")]
    assert execute_queued(valkey_redis, items) == [1, 2, 1, 1]
    assert [valkey_redis.get(k) for k in "abcd"] == [b"1", b"2", b"1", b"1"]  # each ran once


def test_a_redis_without_any_script_runs_each_once(valkey_redis: redis.Redis) -> None:
    valkey_redis.script_flush()
    items = [counting(COUNT, "a"), plain("c"), counting(COUNT_TWICE, "b")]
    assert execute_queued(valkey_redis, items) == [1, 1, 2]  # the plain INCR too: once
    assert execute_queued(valkey_redis, [counting(COUNT, "a"), counting(COUNT_TWICE, "b")]) == [2, 4]
