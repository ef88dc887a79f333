"""The fleet-wide strategy and provider order, written by ``quorum set-strategy`` and read by
every worker on each job (one GET, so a change applies from the next job on)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from orchestration.state.scripts import Queued


class FleetSetting(BaseModel):
    """What ``quorum set-strategy`` stored; ``None`` fields fall back to the config."""

    strategy: str | None = None
    order: list[str] | None = Field(default=None, description="Provider priority order.")
    updated_at: float | None = None


def _key(prefix: str) -> str:
    return f"{prefix}fleet:strategy"


def read_fleet(redis: Any, prefix: str) -> FleetSetting:
    """The current fleet setting (empty when none was set)."""
    return _parse(redis.get(_key(prefix)))


def queue_read_fleet(prefix: str) -> Queued[FleetSetting]:
    """:func:`read_fleet` as one command for a round trip shared with the entry's other reads."""
    key = _key(prefix)

    def queue(pipe: Any) -> int:
        pipe.get(key)
        return 1

    return Queued(queue, lambda replies: _parse(replies[0]))


def _parse(raw: bytes | str | None) -> FleetSetting:
    if not raw:
        return FleetSetting()
    return FleetSetting.model_validate_json(raw)


def write_fleet(redis: Any, prefix: str, setting: FleetSetting) -> None:
    """Store the fleet setting; every worker uses it from its next job."""
    redis.set(_key(prefix), json.dumps(setting.model_dump(), separators=(",", ":")))
