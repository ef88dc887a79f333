"""The fleet's remembered output mode (``RedisModeMemory``) is read from Redis at most once per
provider every ``RECALL_CACHE_S`` per process; what this process writes it sees at once."""

from __future__ import annotations

import redis

from orchestration.state import RedisModeMemory, output_mode_key

PX = "quorum:"


def _hgetalls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))


def test_a_recall_is_read_once_per_period_and_a_remember_is_seen_at_once(valkey_redis: redis.Redis) -> None:
    now = [100.0]
    memory = RedisModeMemory(valkey_redis, PX, cache_s=5.0, clock=lambda: now[0])
    other = RedisModeMemory(valkey_redis, PX)  # another worker
    before = _hgetalls(valkey_redis)
    assert memory.recall("local", "srv-a") is None
    assert memory.recall("local", "srv-a") is None  # nothing stored: not read again either
    assert _hgetalls(valkey_redis) - before == 1
    memory.remember("local", "srv-a", "json_object")
    assert memory.recall("local", "srv-a") == "json_object"  # its own write, without a read
    assert memory.recall("local", "srv-b") is None  # a record about another server still is not used
    assert _hgetalls(valkey_redis) - before == 1
    other.remember("local", "srv-a", "tools")
    assert memory.recall("local", "srv-a") == "json_object"  # another worker's change: not yet
    now[0] += 5.0
    assert memory.recall("local", "srv-a") == "tools"  # read again once the period is over
    assert _hgetalls(valkey_redis) - before == 2


def test_no_cache_reads_every_time(valkey_redis: redis.Redis) -> None:
    memory = RedisModeMemory(valkey_redis, PX, cache_s=0)
    valkey_redis.hset(output_mode_key(PX, "local"), mapping={"mode": "prompt", "server": "s"})
    before = _hgetalls(valkey_redis)
    assert [memory.recall("local", "s") for _ in range(3)] == ["prompt"] * 3
    assert _hgetalls(valkey_redis) - before == 3
