"""Lua scripts shipped in ``orchestration/state/lua/`` and ``orchestration/breaker/lua/``, read via
importlib.resources."""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Generic, TypeVar

from redis import Redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

T = TypeVar("T")

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


_bound: weakref.WeakKeyDictionary[Redis, dict[str | tuple[str, ...], Script]] = weakref.WeakKeyDictionary()


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


@dataclass(frozen=True)
class ScriptCall:
    """One run of ``lua/<name>`` with its KEYS and ARGV, to be sent alone or in a batch."""

    name: str
    keys: list[str]
    args: list[Any]


_BATCH_HEAD = "local __parts = {}\n"
_BATCH_PART = "__parts[{i}] = function(KEYS, ARGV)\n{source}\nend\n"
#: ARGV starts with one (number of keys, number of args) pair per part; then the parts' own.
_BATCH_TAIL = """\
local __out, __k, __a = {}, 1, 2 * #__parts + 1
for __i = 1, #__parts do
  local __nk, __na = tonumber(ARGV[2 * __i - 1]), tonumber(ARGV[2 * __i])
  local __keys, __args = {}, {}
  for __j = 1, __nk do __keys[__j] = KEYS[__k + __j - 1] end
  for __j = 1, __na do __args[__j] = ARGV[__a + __j - 1] end
  __k, __a = __k + __nk, __a + __na
  __out[__i] = __parts[__i](__keys, __args)
end
return __out
"""


@cache
def batch_source(names: tuple[str, ...]) -> str:
    """One script running the scripts ``names`` in order, each on its own slice of KEYS and
    ARGV (each file's text wrapped in a function whose ``KEYS``/``ARGV`` shadow the globals):
    the files stay the single source of each step, and a batch is one atomic round trip."""
    parts = (_BATCH_PART.format(i=i, source=lua_source(n)) for i, n in enumerate(names, 1))
    return _BATCH_HEAD + "".join(parts) + _BATCH_TAIL


def run_batch(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run ``calls`` as one script (one round trip, atomic; their keys must share a slot on a
    cluster); the reply of each, in order."""
    if len(calls) == 1:
        only = calls[0]
        return [bound_script(redis, only.name)(keys=only.keys, args=only.args)]
    names = tuple(c.name for c in calls)
    script = _bound.setdefault(redis, {}).get(names)
    if script is None:
        script = _bound[redis][names] = redis.register_script(batch_source(names))
    keys, argv = _packed(calls)
    return list(script(keys=keys, args=argv))


def _packed(calls: Sequence[ScriptCall]) -> tuple[list[str], list[Any]]:
    """The keys and arguments of ``calls`` as one script takes them: a lone call's own; a batch's
    all keys in order, and each call's key and argument counts ahead of all the arguments."""
    if len(calls) == 1:
        return list(calls[0].keys), list(calls[0].args)
    keys: list[str] = []
    head: list[Any] = []
    args: list[Any] = []
    for c in calls:
        head += [len(c.keys), len(c.args)]
        keys += c.keys
        args += c.args
    return keys, head + args


# --------------------------------------------------------------------------- pipelined steps


@dataclass(frozen=True)
class Queued(Generic[T]):
    """One module's commands for a round trip it shares with others: ``queue`` puts them on a
    pipeline (returning how many it queued), ``parse`` turns their replies into its result, and
    ``scripts`` are the Lua sources it runs by ``EVALSHA`` (loaded if Redis answers NOSCRIPT).
    The readers and writers of ``orchestration`` offer this form so that a worker can send the
    reads (or writes) of one step together without knowing their keys."""

    queue: Callable[[Any], int]
    parse: Callable[[list[Any]], T]
    scripts: tuple[str, ...] = ()


@cache
def sha_of(source: str) -> str:
    """The SHA1 ``EVALSHA`` names ``source`` by (cached)."""
    return hashlib.sha1(source.encode("utf-8")).hexdigest()


def _calls_source(calls: Sequence[ScriptCall]) -> str:
    return lua_source(calls[0].name) if len(calls) == 1 else batch_source(tuple(c.name for c in calls))


def script_queued(calls: Sequence[ScriptCall]) -> Queued[list[Any]]:
    """``calls`` as :func:`run_batch` would run them (one script, their replies in order), in a
    form that rides in another round trip. Their keys must share one slot, as for ``run_batch``."""
    if not calls:
        raise ValueError("no script calls")
    source = _calls_source(calls)
    keys, argv = _packed(calls)

    def queue(pipe: Any) -> int:
        pipe.evalsha(sha_of(source), len(keys), *keys, *argv)
        return 1

    def parse(replies: list[Any]) -> list[Any]:
        return [replies[0]] if len(calls) == 1 else list(replies[0])

    return Queued(queue, parse, (source,))


def execute_queued(redis: Redis, items: Sequence[Queued[Any]], *, raise_on_error: bool = True) -> list[Any]:
    """Send ``items`` in one pipelined round trip (no transaction: their keys may live in
    different slots) and return each one's parsed result, in order. A Redis that lost its scripts
    (restarted, flushed) answers NOSCRIPT to the scripts it does not have, and runs the others:
    the missing scripts are loaded and only the commands that answered NOSCRIPT are sent again
    (a breaker's or a ledger's record that ran must not run twice). With ``raise_on_error``
    False, an item whose replies hold an error gets that exception as its result (the others are
    still parsed); connection errors always raise."""
    pipe = redis.pipeline(transaction=False)
    counts = [item.queue(pipe) for item in items]
    commands = list(pipe.command_stack)
    replies = pipe.execute(raise_on_error=False) if sum(counts) else []
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        for source in dict.fromkeys(s for item in items for s in item.scripts):
            redis.script_load(source)
        again = redis.pipeline(transaction=False)
        for i in missing:
            args, options = commands[i]
            again.execute_command(*args, **options)
        for i, reply in zip(missing, again.execute(raise_on_error=False), strict=True):
            replies[i] = reply
    out: list[Any] = []
    at = 0
    for item, count in zip(items, counts, strict=True):
        part = replies[at : at + count]
        at += count
        error = next((r for r in part if isinstance(r, Exception)), None)
        if error is not None:
            if raise_on_error:
                raise error
            out.append(error)
        else:
            out.append(item.parse(part))
    return out


def queued_all(*items: Queued[Any] | None) -> Queued[list[Any]] | None:
    """``items`` (the Nones left out) as one step for a round trip that takes one, e.g. a job's
    count and its cache entry riding with its answer; their results in order. None when every
    item is None."""
    present = [item for item in items if item is not None]
    if not present:
        return None
    counts: list[int] = []

    def queue(pipe: Any) -> int:
        counts[:] = [item.queue(pipe) for item in present]
        return sum(counts)

    def parse(replies: list[Any]) -> list[Any]:
        out, at = [], 0
        for item, count in zip(present, counts, strict=True):
            out.append(item.parse(replies[at : at + count]))
            at += count
        return out

    scripts = tuple(dict.fromkeys(s for item in present for s in item.scripts))
    return Queued(queue, parse, scripts)
