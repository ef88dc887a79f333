"""Circuit breakers: the shared one in Redis (atomic Lua steps) and the in-process one.

Both run the rules of :mod:`orchestration.breaker.machine`: ``LocalBreaker`` calls its functions
directly, ``RedisBreaker`` runs ``lua/breaker.lua``, which mirrors them step for step. The
public API lives in :class:`Breaker`, so every flavour returns the same :class:`Permit` and
logs every transition exactly once, on the ``quorum.breaker`` logger, in the process whose
call caused it.

Redis clients may use ``decode_responses`` True or False: replies are normalised to ``str``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis

from orchestration.breaker import machine
from orchestration.breaker.machine import (
    PROBE,
    REFUSED,
    Acquire,
    BreakerSnapshot,
    BreakerState,
    Core,
    ForceOpen,
    Operation,
    Outcome,
    Permit,
    Record,
    Reset,
    Step,
    Transition,
)
from orchestration.config import BreakerConfig
from orchestration.state.keys import ProviderKeys
from orchestration.state.scripts import (
    Queued,
    ScriptCall,
    execute_queued,
    float_arg,
    lua_source,
    opt_float,
    run_batch,
    script_queued,
    text,
)

log = logging.getLogger("quorum.breaker")

#: Human text of the machine's refusal codes (shown as the reason an attempt was skipped).
REFUSAL_TEXT = {
    "open": "circuit breaker open",
    "probe_in_flight": "circuit breaker half-open, probe in flight",
}


def log_transition(transition: Transition, scope: str = "shared") -> None:
    """Log one transition: WARNING when a breaker opens, INFO otherwise."""
    level = logging.WARNING if transition.to_state is BreakerState.OPEN else logging.INFO
    until = (
        f", cool-down until {transition.cooldown_until:.3f}"
        if transition.to_state is BreakerState.OPEN and transition.cooldown_until is not None
        else ""
    )
    where = "" if scope == "shared" else f" [{scope}]"
    log.log(
        level,
        "circuit breaker %s: %s -> %s (%s%s)%s",
        transition.provider,
        transition.from_state.value,
        transition.to_state.value,
        transition.reason,
        until,
        where,
        extra={
            "provider": transition.provider,
            "from_state": transition.from_state.value,
            "to_state": transition.to_state.value,
            "reason": transition.reason,
            "breaker_scope": scope,
        },
    )


class Breaker(ABC):
    """The breaker API: permits, outcomes, snapshots; subclasses only supply :meth:`step` (one
    typed operation, run atomically) and :meth:`_snapshot`."""

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config

    # ------------------------------------------------------------------ to implement

    @abstractmethod
    def step(self, provider: str, op: Operation, now: float) -> Step:
        """Run one operation of the state machine for ``provider`` as one atomic step."""

    @abstractmethod
    def _snapshot(self, provider: str, now: float) -> BreakerSnapshot:
        """Read one provider's breaker without changing it."""

    def _scope(self) -> str:
        """Where the state that a step just changed lives (for the log line)."""
        return "shared"

    def _step_also(
        self,
        provider: str,
        op: Operation,
        now: float,
        also: Sequence[ScriptCall],
        extra: Queued[Any] | None = None,
    ) -> tuple[Step, list[Any] | None, list[Any]]:
        """:meth:`step`, plus ``also`` (and ``extra``'s commands) in the same round trip where the
        state lives in Redis; their replies, or None when they did not run (here: never), and
        ``[extra's result]`` when it ran, else ``[]``."""
        return self.step(provider, op, now), None, []

    # ------------------------------------------------------------------ public API

    def acquire(self, provider: str, now: float) -> Permit:
        """May this caller call ``provider`` now? A truthy permit says yes (maybe as the probe)."""
        lease_id, now = uuid.uuid4().hex, float(now)
        step = self.step(provider, Acquire(lease_id), now)
        self._report(provider, step, now)
        if step.note == "lease_expired":
            log.info("circuit breaker %s: probe lease expired; a new probe takes over", provider)
        probe = step.decision == PROBE
        refused = step.decision == REFUSED
        return Permit(
            provider=provider,
            allowed=not refused,
            state=step.state,
            probe=probe,
            lease_id=lease_id if probe else None,
            lease_until=step.lease_until if probe else None,
            reason=REFUSAL_TEXT.get(step.reason or "", step.reason) if refused else None,
            retry_at=step.retry_at if refused else None,
        )

    def record_success(self, provider: str, now: float, permit: Permit | None = None) -> Transition | None:
        """Record a successful call (the probe's success closes the breaker)."""
        return self._record(provider, now, Outcome.SUCCESS, permit)

    def record_failure(
        self,
        provider: str,
        now: float,
        error_kind: str | BaseException,
        permit: Permit | None = None,
    ) -> Transition | None:
        """Record a failed call by error kind (class name); non-counting kinds are ignored."""
        outcome = machine.classify(machine.error_kind_of(error_kind))
        return self._record(provider, now, outcome, permit)

    def record_outcome(
        self,
        provider: str,
        now: float,
        error_kind: str | None,
        permit: Permit | None = None,
        also: Sequence[ScriptCall] = (),
    ) -> list[Any] | None:
        """Record a call's outcome (``error_kind`` None: a success) and run ``also``, the
        provider's other post-call records (health, cost ledger), in the same atomic round trip
        where the breaker lives in Redis. Their replies, or None when they were not run (a
        per-process breaker, Redis unreachable): then the caller sends them itself."""
        return self.record_outcome_with(provider, now, error_kind, permit, also)[0]

    def record_outcome_with(
        self,
        provider: str,
        now: float,
        error_kind: str | None,
        permit: Permit | None = None,
        also: Sequence[ScriptCall] = (),
        extra: Queued[Any] | None = None,
    ) -> tuple[list[Any] | None, list[Any]]:
        """:meth:`record_outcome`, and ``extra`` (commands of another module, e.g. a job's
        publication guard) in the same round trip where the breaker lives in Redis: ``also``'s
        replies (or None) and ``[extra's result]`` when it ran, else ``[]`` (the caller then
        sends it itself; ``extra`` must be safe to repeat, since a lost reply looks the same)."""
        outcome = machine.classify(error_kind)
        lease_id = self._lease_of(provider, permit)
        now = float(now)
        step, replies, ran = self._step_also(provider, Record(outcome, lease_id), now, also, extra)
        self._report(provider, step, now)
        return replies, ran

    def state(self, provider: str, now: float) -> BreakerSnapshot:
        """A snapshot of ``provider``'s breaker at ``now``."""
        return self._snapshot(provider, float(now))

    def states(self, providers: Iterable[str], now: float) -> dict[str, BreakerSnapshot]:
        """Snapshots of several breakers (one round trip where the backend allows)."""
        return {p: self._snapshot(p, float(now)) for p in providers}

    def queue_states(self, providers: Iterable[str], now: float) -> Queued[dict[str, BreakerSnapshot]]:
        """:meth:`states` in a form that rides in a round trip shared with other reads (here:
        no Redis command; the snapshots are taken when the replies are parsed)."""
        names = list(providers)
        return Queued(lambda pipe: 0, lambda replies: self.states(names, now))

    def refusal(self, provider: str, now: float, snapshot: BreakerSnapshot | None = None) -> str | None:
        """Why :meth:`acquire` would refuse ``provider`` now, read-only (None: worth trying);
        from ``snapshot`` when the caller read it already (e.g. with :meth:`queue_states`)."""
        snap = self.state(provider, now) if snapshot is None else snapshot
        if snap.state is BreakerState.CLOSED or snap.probe_ready:
            return None
        if snap.state is BreakerState.OPEN:
            why = f" ({snap.reason})" if snap.reason else ""
            left = (snap.cooldown_until or now) - now
            return f"{REFUSAL_TEXT['open']}{why}, next probe in {left:.0f} s"
        return REFUSAL_TEXT["probe_in_flight"]

    def reset(self, provider: str) -> Transition | None:
        """Force CLOSED and forget counters and backoff (``quorum reset PROVIDER``)."""
        step = self.step(provider, Reset(), 0.0)
        return self._report(provider, step, None)

    def force_open(self, provider: str, now: float, cooldown_s: float | None = None) -> Transition | None:
        """Open now for ``cooldown_s`` (default: the current backoff cool-down); for ops/tests."""
        now = float(now)
        step = self.step(provider, ForceOpen(cooldown_s), now)
        return self._report(provider, step, now)

    # ------------------------------------------------------------------ helpers

    def _record(
        self, provider: str, now: float, outcome: Outcome, permit: Permit | None
    ) -> Transition | None:
        """Run a record step with the permit's lease (only a probe's permit carries one)."""
        lease_id = self._lease_of(provider, permit)
        now = float(now)
        step = self.step(provider, Record(outcome, lease_id), now)
        return self._report(provider, step, now)

    @staticmethod
    def _lease_of(provider: str, permit: Permit | None) -> str | None:
        """The probe lease a permit carries (None for an ordinary call)."""
        if permit is not None and permit.provider != provider:
            raise ValueError(f"permit for {permit.provider!r} used for {provider!r}")
        return permit.lease_id if permit is not None and permit.probe else None

    def _report(self, provider: str, step: Step, now: float | None) -> Transition | None:
        """Turn a step that changed the state into a logged :class:`Transition`."""
        if step.from_state is None:
            return None
        transition = Transition(
            provider=provider,
            from_state=step.from_state,
            to_state=step.state,
            reason=step.reason or "",
            at=now,
            cooldown_until=step.cooldown_until,
        )
        log_transition(transition, self._scope())
        return transition


class LocalBreaker(Breaker):
    """The in-process breaker: same rules, state in this process only (thread-safe)."""

    def __init__(self, config: BreakerConfig) -> None:
        super().__init__(config)
        self._cores: dict[str, Core] = {}
        self._lock = threading.Lock()

    def _scope(self) -> str:
        """Transitions of this breaker concern this process only."""
        return "per-process"

    def step(self, provider: str, op: Operation, now: float) -> Step:
        with self._lock:
            core = self._cores.setdefault(provider, Core())
            return machine.apply(core, self.config, op, now)

    def _snapshot(self, provider: str, now: float) -> BreakerSnapshot:
        with self._lock:
            core = self._cores.get(provider) or Core()
            return machine.snapshot(core, self.config, provider, now, source="local")

    def seed(self, provider: str, state: BreakerState, cooldown_until: float | None, level: int) -> None:
        """Start from a known shared state (an open breaker stays open when Redis goes away)."""
        with self._lock:
            core = Core(level=level)
            if state is not BreakerState.CLOSED:  # half-open → open, already eligible to probe
                core.state, core.cooldown_until = BreakerState.OPEN, cooldown_until
            self._cores[provider] = core

    def clear(self) -> None:
        """Forget every provider's state."""
        with self._lock:
            self._cores.clear()


class RedisBreaker(Breaker):
    """The fleet-wide breaker: state in Redis, each step one atomic Lua script (cluster-safe)."""

    def __init__(self, redis: Redis, prefix: str, config: BreakerConfig) -> None:
        super().__init__(config)
        self.redis = redis
        self.prefix = prefix
        self._script = redis.register_script(lua_source("breaker.lua"))
        c = config
        self._config_args = [
            float_arg(c.window_s),
            str(c.min_calls),
            float_arg(c.failure_rate),
            str(c.consecutive_failures),
            float_arg(c.cooldown_s),
            float_arg(c.max_cooldown_s),
            float_arg(c.backoff),
            float_arg(c.auth_cooldown_s),
            float_arg(c.probe_lease_s),
        ]

    def step(self, provider: str, op: Operation, now: float) -> Step:
        call = self._call(provider, op, now)
        return parse_reply(self._script(keys=call.keys, args=call.args))

    def _call(self, provider: str, op: Operation, now: float) -> ScriptCall:
        """The Lua script's run for one operation (sent alone, or batched with other records)."""
        keys = ProviderKeys.of(self.prefix, provider).breaker_keys
        lease_id = op.lease_id if isinstance(op, Acquire | Record) else None
        outcome = op.outcome if isinstance(op, Record) else None
        cooldown_s = op.cooldown_s if isinstance(op, ForceOpen) else None
        args = [
            op.name,
            float_arg(now),
            *self._config_args,
            lease_id or "",
            outcome.value if outcome is not None else "",
            float_arg(cooldown_s) if cooldown_s is not None else "",
        ]
        return ScriptCall("breaker.lua", keys, args)

    def _step_also(
        self,
        provider: str,
        op: Operation,
        now: float,
        also: Sequence[ScriptCall],
        extra: Queued[Any] | None = None,
    ) -> tuple[Step, list[Any] | None, list[Any]]:
        """The step and ``also`` as one script: one round trip (all keys share the provider's
        slot); ``extra``'s commands, whose keys may live elsewhere, ride in the same pipeline."""
        step = self._call(provider, op, now)
        if extra is None:
            replies = run_batch(self.redis, [step, *also])
            return parse_reply(replies[0]), replies[1:], []
        batch = script_queued([step, *also])
        records, value = execute_queued(self.redis, [batch, extra], raise_on_error=False)
        if isinstance(records, Exception):
            raise records
        return parse_reply(records[0]), records[1:], [] if isinstance(value, Exception) else [value]

    def _snapshot(self, provider: str, now: float) -> BreakerSnapshot:
        return self.states([provider], now)[provider]

    def states(self, providers: Iterable[str], now: float) -> dict[str, BreakerSnapshot]:
        """Snapshots of several breakers in one pipelined round trip."""
        names = list(providers)
        read = self.queue_states(names, now)
        pipe = self.redis.pipeline(transaction=len(names) == 1)
        read.queue(pipe)
        return read.parse(pipe.execute())

    def queue_states(self, providers: Iterable[str], now: float) -> Queued[dict[str, BreakerSnapshot]]:
        """The reads of :meth:`states` (three commands per provider), to send in a round trip
        shared with other reads."""
        names = list(providers)
        now = float(now)
        cutoff = "(" + float_arg(now - self.config.window_s)

        def queue(pipe: Any) -> int:
            for name in names:
                keys = ProviderKeys.of(self.prefix, name)
                pipe.hgetall(keys.breaker)
                pipe.zcount(keys.window_calls, cutoff, "+inf")
                pipe.zcount(keys.window_failures, cutoff, "+inf")
            return 3 * len(names)

        def parse(replies: list[Any]) -> dict[str, BreakerSnapshot]:
            out: dict[str, BreakerSnapshot] = {}
            for i, name in enumerate(names):
                fields, calls, failures = replies[3 * i : 3 * i + 3]
                out[name] = machine.snapshot(
                    core_from_hash(fields),
                    self.config,
                    name,
                    now,
                    window_calls=int(calls),
                    window_failures=int(failures),
                    source="redis",
                )
            return out

        return Queued(queue, parse)


def core_from_hash(fields: dict[bytes, bytes] | dict[str, str]) -> Core:
    """Rebuild a :class:`Core` (without window members) from the breaker hash."""
    h = {text(k): text(v) for k, v in fields.items()}
    return Core(
        state=BreakerState(h.get("state") or BreakerState.CLOSED),
        opened_at=opt_float(h.get("opened_at")),
        cooldown_until=opt_float(h.get("cooldown_until")),
        level=int(h.get("level") or 0),
        consecutive=int(h.get("consecutive") or 0),
        lease_id=h.get("lease_id") or None,
        lease_until=opt_float(h.get("lease_until")),
        reason=h.get("reason") or None,
    )


def parse_reply(reply: list[bytes] | list[str]) -> Step:
    """Turn the Lua script's flat reply into a :class:`Step`."""
    decision, state, from_state, reason, cooldown_until, level, lease_until, retry_at, note = (
        text(v) for v in reply
    )
    return Step(
        decision=decision,
        state=BreakerState(state),
        cooldown_until=opt_float(cooldown_until),
        level=int(level),
        lease_until=opt_float(lease_until),
        retry_at=opt_float(retry_at),
        reason=reason or None,
        from_state=BreakerState(from_state) if from_state else None,
        note=note or None,
    )
