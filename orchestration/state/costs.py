"""Cost ledger in Redis: integer micro-USD and token counters per provider/model/UTC day.

Per provider and day, one hash ``{prefix}{provider}:cost:<YYYY-MM-DD>`` holding, per model,
``calls:<model>``, ``tokens_in:<model>``, ``tokens_out:<model>``, ``micro_usd:<model>``, and
the provider's day total ``micro_usd`` (the budget gate's single HGET). A set
``{prefix}{provider}:cost:days`` indexes the recorded days. Each attempt is counted once: the
script sets ``{prefix}{provider}:cost:seen:<attempt_id>`` (NX, 7 days) and increments in one
atomic step, so a redelivered task adds nothing. All of a provider's keys share its hash tag.

Per job, ``{prefix}{fleet}:jobs`` counts ``jobs`` and ``micro_usd`` once per job id (marker
``{prefix}{fleet}:jobs:seen:<job_id>``), for the average cost per job: every job that reached a
provider decision counts, answered or failed (a failed chord or failover job with what its
attempts cost), so the average is over all of them; when the caller says how the job ended, also
``by:<kind>:<strategy>:<outcome>`` (``quorum metrics``' jobs by outcome).

Counters are integers (``HINCRBY`` only): no float drift, however many calls are summed.
Redis clients may use ``decode_responses`` True or False: replies are normalised on read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from redis import Redis

from orchestration.models import CostRecord
from orchestration.state.keys import provider_key
from orchestration.state.scripts import Queued, ScriptCall, lua_source, run_batch, script_queued, text

#: How long an attempt's (or job's) "already counted" marker lives: far beyond any redelivery.
SEEN_TTL_S = 7 * 24 * 3600
#: Hash tag of the fleet-wide job counters.
FLEET_TAG = "fleet"
#: The per-model counters of a day hash, in ``CostRecord`` field names.
COUNTERS = ("calls", "tokens_in", "tokens_out", "micro_usd")
#: Model name recorded when a reply did not say which model answered.
UNKNOWN_MODEL = "unknown"
#: Prefix of the job hash's per kind/strategy/outcome counters.
JOB_CLASS = "by"
#: Field of a day hash holding the provider's total micro-USD that day (all models).
DAY_TOTAL = "micro_usd"


def utc_day(now: float) -> str:
    """The UTC day ``YYYY-MM-DD`` of a Unix time (the ledger's day boundary); Unix time has
    86,400 seconds in every day, so the day number names it."""
    return _day_name(int(now // 86400))


@lru_cache(maxsize=8)
def _day_name(day: int) -> str:
    """``YYYY-MM-DD`` of a day number (days since 1970-01-01, UTC): once per day, not per call."""
    return datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")


def day_key(prefix: str, provider: str, day: str) -> str:
    """The counter hash of one provider and day."""
    return provider_key(prefix, provider, f"cost:{day}")


def _days_key(prefix: str, provider: str) -> str:
    return provider_key(prefix, provider, "cost:days")


def _jobs_key(prefix: str) -> str:
    return provider_key(prefix, FLEET_TAG, "jobs")


def _non_negative(**values: int) -> list[int]:
    """The values as ints; a negative count or cost is a caller bug, refused loudly."""
    out = []
    for name, value in values.items():
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        out.append(int(value))
    return out


def _once_call(keys: list[str], index_member: str, increments: dict[str, int]) -> ScriptCall:
    """The once-only ledger script's run (its reply: 1 counted, 0 duplicate)."""
    args: list[str | int] = [SEEN_TTL_S, index_member]
    for field, amount in increments.items():
        args += [field, amount]
    return ScriptCall("ledger.lua", keys, args)


def record_cost(
    redis: Redis,
    prefix: str,
    *,
    attempt_id: str,
    provider: str,
    model: str,
    tokens_in: int,
    tokens_out: int,
    micro_usd: int,
    now: float,
) -> bool:
    """Count one attempt's tokens and cost on its UTC day, once per ``attempt_id`` (False: duplicate)."""
    call = cost_call(
        prefix,
        attempt_id=attempt_id,
        provider=provider,
        model=model,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        micro_usd=micro_usd,
        now=now,
    )
    return bool(run_batch(redis, [call])[0])


def cost_call(
    prefix: str,
    *,
    attempt_id: str,
    provider: str,
    model: str,
    tokens_in: int,
    tokens_out: int,
    micro_usd: int,
    now: float,
) -> ScriptCall:
    """The ledger run of :func:`record_cost`, to send alone or batched with the provider's other
    post-call records (its reply: 1 counted, 0 duplicate)."""
    if not attempt_id:
        raise ValueError("attempt_id must be non-empty: it is what makes recording idempotent")
    model = model or UNKNOWN_MODEL
    tin, tout, micro = _non_negative(tokens_in=tokens_in, tokens_out=tokens_out, micro_usd=micro_usd)
    day = utc_day(now)
    keys = [
        provider_key(prefix, provider, f"cost:seen:{attempt_id}"),
        day_key(prefix, provider, day),
        _days_key(prefix, provider),
    ]
    increments = {
        f"calls:{model}": 1,
        f"tokens_in:{model}": tin,
        f"tokens_out:{model}": tout,
        f"micro_usd:{model}": micro,
        DAY_TOTAL: micro,
    }
    return _once_call(keys, day, increments)


def job_micro_usd(attempts: Iterable[Any]) -> int:
    """A job's total cost in micro-USD from its attempts: ``Attempt`` models or their JSON/summary
    dicts (a failed job's error lists them), each counted by its ``cost_usd``."""
    total = 0
    for a in attempts:
        cost = a.get("cost_usd") if isinstance(a, dict) else getattr(a, "cost_usd", 0)
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost > 0:
            total += round(cost * 1_000_000)
    return total


def record_job(
    redis: Redis,
    prefix: str,
    job_id: str,
    micro_usd: int,
    *,
    kind: str = "extract",
    strategy: str | None = None,
    outcome: str | None = None,
) -> bool:
    """Count one finished job and its total cost, once per ``job_id`` (False: duplicate); with an
    ``outcome`` (``ok``, ``failed``) also under its kind, strategy and outcome."""
    return bool(run_batch(redis, [_job_call(prefix, job_id, micro_usd, kind, strategy, outcome)])[0])


def queue_record_job(
    prefix: str,
    job_id: str,
    micro_usd: int,
    *,
    kind: str = "extract",
    strategy: str | None = None,
    outcome: str | None = None,
) -> Queued[bool]:
    """:func:`record_job` in a form that rides in another step's round trip (e.g. the result
    store's); safe to repeat (counted once per job id). Its keys carry the ``{fleet}`` hash tag,
    so it is a script of its own there, never part of another slot's script."""
    call = script_queued([_job_call(prefix, job_id, micro_usd, kind, strategy, outcome)])
    return Queued(call.queue, lambda replies: bool(call.parse(replies)[0]), call.scripts)


def _job_call(
    prefix: str, job_id: str, micro_usd: int, kind: str, strategy: str | None, outcome: str | None
) -> ScriptCall:
    if not job_id:
        raise ValueError("job_id must be non-empty")
    (micro,) = _non_negative(micro_usd=micro_usd)
    keys = [provider_key(prefix, FLEET_TAG, f"jobs:seen:{job_id}"), _jobs_key(prefix)]
    increments = {"jobs": 1, "micro_usd": micro}
    if outcome:
        increments[f"{JOB_CLASS}:{kind}:{strategy or 'unknown'}:{outcome}"] = 1
    return _once_call(keys, "", increments)


def jobs_by_class(redis: Redis, prefix: str) -> dict[tuple[str, str, str], int]:
    """``{(kind, strategy, outcome): jobs}`` for the jobs recorded with an outcome."""
    out = {}
    for raw_field, raw_value in redis.hgetall(_jobs_key(prefix)).items():
        tag, _, rest = text(raw_field).partition(":")
        parts = rest.split(":")
        if tag == JOB_CLASS and len(parts) == 3:
            out[(parts[0], parts[1], parts[2])] = int(text(raw_value))
    return out


def _records(provider: str, day: str, fields: Any) -> list[CostRecord]:
    """The per-model records of one day hash (given as a dict or a flat field/value list)."""
    pairs = fields.items() if isinstance(fields, dict) else zip(fields[::2], fields[1::2], strict=True)
    by_model: dict[str, dict[str, int]] = {}
    for raw_field, raw_value in pairs:
        counter, sep, model = text(raw_field).partition(":")
        if sep and counter in COUNTERS:
            by_model.setdefault(model, {})[counter] = int(text(raw_value))
    return [
        CostRecord(provider=provider, model=model, day=day, **counts)
        for model, counts in sorted(by_model.items())
    ]


def read_costs(
    redis: Redis, prefix: str, providers: Iterable[str], days: Sequence[str] | None = None
) -> list[CostRecord]:
    """Per provider/model/day records in one pipelined round trip (``days`` None: every day)."""
    names = list(providers)
    pipe = redis.pipeline(transaction=False)
    if days is None:  # EVAL, not EVALSHA: a pipeline would spend a round trip on SCRIPT EXISTS
        source = lua_source("cost_read.lua")
        for name in names:
            pipe.eval(source, 1, _days_key(prefix, name), day_key(prefix, name, ""))
    else:
        for name in names:
            for day in days:
                pipe.hgetall(day_key(prefix, name, day))
    replies = iter(pipe.execute())
    out: list[CostRecord] = []
    for name in names:
        if days is None:
            reply = next(replies)
            for i in range(0, len(reply), 2):
                out += _records(name, text(reply[i]), reply[i + 1])
        else:
            for day in days:
                out += _records(name, day, next(replies))
    return out


@dataclass(frozen=True)
class CostTotals:
    """One provider's calls, tokens and cost summed over models and days."""

    provider: str
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    micro_usd: int = 0

    @property
    def usd(self) -> float:
        return self.micro_usd / 1_000_000


def totals(
    redis: Redis, prefix: str, providers: Iterable[str], days: Sequence[str] | None = None
) -> dict[str, CostTotals]:
    """Totals per provider (zero for providers with no spend) over ``days`` (None: every day)."""
    names = list(providers)
    sums = {name: dict.fromkeys(COUNTERS, 0) for name in names}
    for rec in read_costs(redis, prefix, names, days):
        for counter in COUNTERS:
            sums[rec.provider][counter] += getattr(rec, counter)
    return {name: CostTotals(provider=name, **sums[name]) for name in names}


def spent_today(redis: Redis, prefix: str, provider: str, now: float) -> int:
    """Micro-USD ``provider`` spent on ``now``'s UTC day, all models (one HGET)."""
    raw = redis.hget(day_key(prefix, provider, utc_day(now)), DAY_TOTAL)
    return int(text(raw) or 0)


def job_stats(redis: Redis, prefix: str) -> tuple[int, int, float]:
    """``(jobs, micro_usd_total, average_usd)`` over every recorded job (average 0.0 for none)."""
    fields = {text(k): int(text(v)) for k, v in redis.hgetall(_jobs_key(prefix)).items()}
    jobs, micro = fields.get("jobs", 0), fields.get("micro_usd", 0)
    return jobs, micro, (micro / jobs / 1_000_000 if jobs else 0.0)
