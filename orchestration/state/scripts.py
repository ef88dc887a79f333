"""Lua scripts shipped in ``orchestration/state/lua/`` and ``orchestration/breaker/lua/``, read via
importlib.resources."""

from __future__ import annotations

import weakref
from functools import cache
from importlib.resources import files

from redis import Redis
from redis.commands.core import Script

#: The packages whose ``lua/`` folder holds scripts (file names are unique across them).
_HOMES = ("orchestration.state", "orchestration.breaker")


@cache
def lua_source(name: str) -> str:
    """The text of ``lua/<name>`` (cached: the files never change at run time)."""
    for home in _HOMES:
        path = files(home).joinpath("lua", name)
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(f"no lua/{name} in {', '.join(_HOMES)}")


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
