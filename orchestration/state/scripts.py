"""Lua scripts shipped in ``orchestration/state/lua/*.lua`` (and ``orchestration/breaker/breaker.lua``),
read via importlib.resources."""

from __future__ import annotations

import weakref
from functools import cache
from importlib.resources import files

from redis import Redis
from redis.commands.core import Script


@cache
def lua_source(name: str, package: str = "orchestration.state") -> str:
    """The text of ``lua/<name>`` in ``package`` (cached: the files never change at run time)."""
    return files(package).joinpath("lua", name).read_text(encoding="utf-8")


_bound: weakref.WeakKeyDictionary[Redis, dict[str, Script]] = weakref.WeakKeyDictionary()


def bound_script(redis: Redis, name: str) -> Script:
    """``lua/<name>`` registered with ``redis``, once per client rather than once per call."""
    scripts = _bound.setdefault(redis, {})
    script = scripts.get(name)
    if script is None:
        script = scripts[name] = redis.register_script(lua_source(name))
    return script


def text(value: bytes | str | None) -> str:
    """A Redis reply value as ``str``, whether the client decodes responses or not."""
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def float_arg(value: float) -> str:
    """A float as a script argument that round-trips exactly (``repr`` is shortest exact)."""
    return repr(float(value))


def opt_float(value: bytes | str | None) -> float | None:
    """Parse an optional numeric reply value ('' or missing → None)."""
    s = text(value)
    return float(s) if s else None
