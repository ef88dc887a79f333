"""The shared records in Redis that every worker agrees on (the circuit breaker has its own
package, :mod:`orchestration.breaker`): health, costs, budgets, rate limits, answer quality,
consensus accuracy, the fleet setting, the result cache (:mod:`.cache`), per-job records
(:mod:`.job_records`) and the remembered output mode; all keys under one prefix, each
provider's sharing a hash tag (:mod:`.keys`)."""

from orchestration.state.accuracy import RecentWeights, laplace_accuracy, read_weights, record_accuracy
from orchestration.state.budget import BudgetGate, BudgetStatus, budget_status
from orchestration.state.costs import (
    CostTotals,
    cost_call,
    job_micro_usd,
    jobs_by_class,
    read_costs,
    record_cost,
    record_job,
    spent_today,
)
from orchestration.state.fleet import FleetSetting, read_fleet, write_fleet
from orchestration.state.health import call_record, clear_health, read_health, record_call
from orchestration.state.keys import DEFAULT_PREFIX, ProviderKeys, provider_key
from orchestration.state.output_mode import RedisModeMemory, output_mode_key
from orchestration.state.quality import QualityGate
from orchestration.state.ratelimit import RateLimitGate

__all__ = [
    "DEFAULT_PREFIX",
    "BudgetGate",
    "BudgetStatus",
    "CostTotals",
    "FleetSetting",
    "ProviderKeys",
    "QualityGate",
    "RateLimitGate",
    "RecentWeights",
    "RedisModeMemory",
    "budget_status",
    "call_record",
    "clear_health",
    "cost_call",
    "job_micro_usd",
    "jobs_by_class",
    "laplace_accuracy",
    "output_mode_key",
    "provider_key",
    "read_costs",
    "read_fleet",
    "read_health",
    "read_weights",
    "record_accuracy",
    "record_call",
    "record_cost",
    "record_job",
    "spent_today",
    "write_fleet",
]
