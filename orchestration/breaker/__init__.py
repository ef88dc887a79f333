"""The circuit breaker: its rules as a pure state machine (:mod:`.machine`), one
:class:`Breaker` interface whose one operation (:meth:`Breaker.step`) runs in Redis as one Lua
script (:class:`RedisBreaker`) or in this process (:class:`LocalBreaker`), and the Redis breaker
that degrades to a per-process one while Redis is unreachable (:class:`ResilientBreaker`)."""

from orchestration.breaker.breakers import Breaker, LocalBreaker, RedisBreaker
from orchestration.breaker.machine import (
    Acquire,
    BreakerSnapshot,
    BreakerState,
    ForceOpen,
    Operation,
    Outcome,
    Permit,
    Record,
    Reset,
    Step,
    Transition,
    classify,
    error_kind_of,
)
from orchestration.breaker.resilient import ResilientBreaker, fast_fail_client

__all__ = [
    "Acquire",
    "Breaker",
    "BreakerSnapshot",
    "BreakerState",
    "ForceOpen",
    "LocalBreaker",
    "Operation",
    "Outcome",
    "Permit",
    "Record",
    "RedisBreaker",
    "Reset",
    "ResilientBreaker",
    "Step",
    "Transition",
    "classify",
    "error_kind_of",
    "fast_fail_client",
]
