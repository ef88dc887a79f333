"""Cost ledger in Redis (fakeredis and real Valkey): hand-computed costs, exactly-once, days, jobs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import redis
from redis.crc import key_slot

from orchestration.config import ProviderConfig
from orchestration.models import CostRecord
from orchestration.pricing import cost_micro_usd
from orchestration.state import CostTotals, read_costs, record_cost, record_job, spent_today
from orchestration.state.costs import SEEN_TTL_S, day_key, job_stats, totals, utc_day

PX = "c:"
DAY1 = datetime(2025, 3, 14, tzinfo=UTC).timestamp()  # 2025-03-14T00:00:00Z
DAY2 = DAY1 + 86_400
CLAUDE = ProviderConfig(
    kind="anthropic", model="claude-sonnet-4-6", price_in_per_mtok=3, price_out_per_mtok=15
)
OPENAI = ProviderConfig(kind="openai", model="gpt-4.1-mini", price_in_per_mtok=0.4, price_out_per_mtok=1.6)
GEMINI = ProviderConfig(
    kind="gemini", model="gemini-2.5-flash", price_in_per_mtok=0.3, price_out_per_mtok=2.5
)


def record(
    r: redis.Redis, attempt_id: str, provider: str, cfg: ProviderConfig, tin: int, tout: int, now: float
) -> bool:
    micro = cost_micro_usd(cfg, tin, tout)
    return record_cost(
        r, PX, attempt_id=attempt_id, provider=provider, model=cfg.model,
        tokens_in=tin, tokens_out=tout, micro_usd=micro, now=now,
    )  # fmt: skip


def test_costs_match_hand_computed_prices(redis_client: redis.Redis) -> None:
    # claude: 1234 x $3/Mtok = 3702, 567 x $15/Mtok = 8505 -> 12207 micro-USD
    assert cost_micro_usd(CLAUDE, 1234, 567) == 12207
    # openai: 1000 x $0.40 = 400, 500 x $1.60 = 800 -> 1200; gemini: 333 x 0.30 = 99.9,
    # 77 x 2.50 = 192.5 -> 292.4, rounded once per call -> 292
    assert record(redis_client, "t1", "claude", CLAUDE, 1234, 567, DAY1 + 10)
    assert record(redis_client, "t2", "claude", CLAUDE, 1234, 567, DAY1 + 20)
    assert record(redis_client, "t3", "openai", OPENAI, 1000, 500, DAY1 + 30)
    assert record(redis_client, "t4", "gemini", GEMINI, 333, 77, DAY1 + 40)
    recs = read_costs(redis_client, PX, ["claude", "openai", "gemini"], ["2025-03-14"])
    assert recs == [
        CostRecord(provider="claude", model="claude-sonnet-4-6", day="2025-03-14", calls=2,
                   tokens_in=2468, tokens_out=1134, micro_usd=24414),
        CostRecord(provider="openai", model="gpt-4.1-mini", day="2025-03-14", calls=1,
                   tokens_in=1000, tokens_out=500, micro_usd=1200),
        CostRecord(provider="gemini", model="gemini-2.5-flash", day="2025-03-14", calls=1,
                   tokens_in=333, tokens_out=77, micro_usd=292),
    ]  # fmt: skip
    assert recs[0].usd == 0.024414
    assert spent_today(redis_client, PX, "claude", DAY1 + 50) == 24414


def test_duplicate_attempt_is_counted_once(redis_client: redis.Redis) -> None:
    assert record(redis_client, "task-1", "claude", CLAUDE, 1234, 567, DAY1 + 10) is True
    assert record(redis_client, "task-1", "claude", CLAUDE, 1234, 567, DAY1 + 99) is False
    # a redelivery after midnight is still the same attempt
    assert record(redis_client, "task-1", "claude", CLAUDE, 1234, 567, DAY2 + 5) is False
    t = totals(redis_client, PX, ["claude"])["claude"]
    assert t == CostTotals(provider="claude", calls=1, tokens_in=1234, tokens_out=567, micro_usd=12207)
    seen = redis_client.ttl(f"{PX}{{claude}}:cost:seen:task-1")
    assert 0 < seen <= SEEN_TTL_S


def test_eight_threads_racing_one_attempt_count_it_once(redis_client: redis.Redis) -> None:
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def worker() -> None:
        barrier.wait()
        results.append(record(redis_client, "raced", "claude", CLAUDE, 1234, 567, DAY1))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=5)
    assert sorted(results) == [False] * 7 + [True]
    assert totals(redis_client, PX, ["claude"])["claude"].micro_usd == 12207


def test_days_are_separate(redis_client: redis.Redis) -> None:
    assert utc_day(DAY2 - 1) == "2025-03-14" and utc_day(DAY2) == "2025-03-15"
    record(redis_client, "a", "openai", OPENAI, 1000, 500, DAY2 - 1)  # 23:59:59 → 1200
    record(redis_client, "b", "openai", OPENAI, 2000, 0, DAY2)  # 00:00:00 next day → 800
    assert spent_today(redis_client, PX, "openai", DAY2 - 1) == 1200
    assert spent_today(redis_client, PX, "openai", DAY2 + 3600) == 800
    only_first = read_costs(redis_client, PX, ["openai"], ["2025-03-14"])
    assert [(r.day, r.micro_usd) for r in only_first] == [("2025-03-14", 1200)]
    every_day = read_costs(redis_client, PX, ["openai", "claude"])  # days=None: all recorded days
    assert [(r.day, r.calls, r.tokens_in, r.micro_usd) for r in every_day] == [
        ("2025-03-14", 1, 1000, 1200),
        ("2025-03-15", 1, 2000, 800),
    ]
    assert totals(redis_client, PX, ["openai"])["openai"].micro_usd == 2000
    assert totals(redis_client, PX, ["openai"], ["2025-03-15"])["openai"].micro_usd == 800
    assert read_costs(redis_client, PX, ["openai"], ["2025-01-01"]) == []


def test_models_are_separate_even_with_colons(redis_client: redis.Redis) -> None:
    local = ProviderConfig(kind="openai_compatible", model="llama3.1:8b", price_in_per_mtok=1)
    record(redis_client, "x", "local", local, 10, 5, DAY1)
    record(redis_client, "y", "local", local.model_copy(update={"model": "qwen2:7b"}), 20, 5, DAY1)
    recs = read_costs(redis_client, PX, ["local"], ["2025-03-14"])
    assert [(r.model, r.tokens_in, r.micro_usd) for r in recs] == [
        ("llama3.1:8b", 10, 10),
        ("qwen2:7b", 20, 20),
    ]
    record_cost(
        redis_client, PX, attempt_id="z", provider="local", model="",
        tokens_in=1, tokens_out=0, micro_usd=1, now=DAY1,
    )  # fmt: skip
    assert read_costs(redis_client, PX, ["local"], ["2025-03-14"])[-1].model == "unknown"
    t = totals(redis_client, PX, ["local", "nobody"])
    assert (t["local"].calls, t["local"].micro_usd, t["local"].usd) == (3, 31, 0.000031)
    assert t["nobody"] == CostTotals(provider="nobody")


def test_job_average(redis_client: redis.Redis) -> None:
    assert job_stats(redis_client, PX) == (0, 0, 0.0)
    assert record_job(redis_client, PX, "job-1", 12207) is True
    assert record_job(redis_client, PX, "job-2", 1200) is True
    assert record_job(redis_client, PX, "job-1", 12207) is False  # redelivered finisher
    assert record_job(redis_client, PX, "job-3", 0) is True  # a cache hit costs nothing
    jobs, micro, avg = job_stats(redis_client, PX)
    assert (jobs, micro) == (3, 13407)
    assert avg == pytest.approx(0.004469)  # 13407 / 3 = 4469 micro-USD


def test_a_providers_keys_share_one_slot() -> None:
    keys = ["c:{claude}:cost:seen:task-1", day_key("c:", "claude", "2025-03-14"), "c:{claude}:cost:days"]
    assert len({key_slot(k.encode()) for k in keys}) == 1


@pytest.mark.parametrize("bad", [{"tokens_in": -1}, {"micro_usd": 1.5}, {"attempt_id": ""}])
def test_invalid_input_is_refused(fake_redis: redis.Redis, bad: dict[str, object]) -> None:
    kw: dict[str, object] = dict(
        attempt_id="a", provider="claude", model="m", tokens_in=1, tokens_out=1, micro_usd=1, now=DAY1
    )
    with pytest.raises(ValueError):
        record_cost(fake_redis, PX, **{**kw, **bad})  # type: ignore[arg-type]
    assert fake_redis.keys("*") == []
