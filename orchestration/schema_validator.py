"""The JSON Schema validator producers' schemas run on: it never fetches, its patterns run on a
linear-time engine (RE2) and each validation has a step budget, so a hostile schema or answer
cannot read a file, make a request or hold a worker's CPU.

Checks made when a job arrives (:func:`check_schema_features`) refuse what this validator will
not run; :class:`Budget` bounds what it does run. Accepted features: ``docs/operations.md``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import re2
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend
from referencing import Registry
from referencing.exceptions import NoSuchResource

#: Keyword evaluations one answer's validation may take (email_entities: 5; 50 objects of 5
#: string properties: ~650). Spent in ~100 ms at worst (every step a $ref), ~10 ms usually.
MAX_VALIDATION_STEPS = 5_000
#: Subschemas a schema may expand to through its ``$ref``s (each expanded once; recursion counts
#: one): a schema whose definitions reference each other twice per level is refused up front.
MAX_EXPANDED_SUBSCHEMAS = 10_000
#: Memory RE2 may use to compile one pattern (bytes); larger patterns are refused.
RE2_MAX_MEM = 1 << 20
#: Keywords whose values are references to resolve; only ``#/$defs/...`` (or ``#/definitions``).
LOCAL_REF_PREFIXES = ("#/$defs/", "#/definitions/")
#: Keywords refused outright, with the reason a producer sees.
REFUSED_KEYWORDS: dict[str, str] = {
    "$id": "$id is not accepted (a schema has no base URI: it is data, never fetched)",
    "$dynamicRef": "$dynamicRef is not accepted; use $ref to #/$defs/...",
    "$recursiveRef": "$recursiveRef is not accepted; use $ref to #/$defs/...",
    "unevaluatedProperties": "unevaluatedProperties is not accepted; use additionalProperties",
    "unevaluatedItems": "unevaluatedItems is not accepted; use items",
}


class SchemaFeatureError(ValueError):
    """A schema uses a feature this validator refuses; ``where`` is a JSON pointer into it."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"at {where or '/'}: {reason}")
        self.where = where
        self.reason = reason


class BudgetExceeded(Exception):
    """Validation took more steps than its :class:`Budget` allows."""


def _refuse_retrieval(uri: str) -> Any:
    """The registry's retrieve function: nothing is ever fetched or read, whatever ``uri`` is."""
    raise NoSuchResource(ref=uri)


#: A registry that resolves only what the schema itself holds (and the bundled meta-schemas).
REGISTRY: Registry[Any] = Registry(retrieve=_refuse_retrieval)


# --------------------------------------------------------------------------- RE2 patterns


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = RE2_MAX_MEM
    return options


_OPTIONS = _re2_options()


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (linear-time matching); ValueError when RE2 cannot run it."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        detail = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(
            f"pattern {pattern[:80]!r} cannot run on RE2 ({detail}); backreferences and lookaround "
            "are not supported"
        ) from None


# --------------------------------------------------------------------------- step budget


@dataclass
class Budget:
    """Keyword evaluations left for one validation; spending past zero raises BudgetExceeded."""

    steps: int = MAX_VALIDATION_STEPS

    def spend(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise BudgetExceeded(f"validation exceeded {MAX_VALIDATION_STEPS} steps")


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("quorum_schema_budget", default=None)

Keyword = Callable[[Validator, Any, Any, dict[str, Any]], Any]


def _budgeted(fn: Keyword) -> Keyword:
    """``fn`` spending one step of the current budget per call (no budget: no limit)."""

    def keyword(validator: Validator, value: Any, instance: Any, schema: dict[str, Any]) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            budget.spend()
        return fn(validator, value, instance, schema)

    keyword.__name__ = getattr(fn, "__name__", "keyword")
    return keyword


# --------------------------------------------------------------------------- RE2 keywords


def _pattern(validator: Validator, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not compile_pattern(pattern).search(instance):
        yield ValidationError(f"{instance[:80]!r} does not match {pattern[:80]!r}")


def _pattern_properties(
    validator: Validator, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = compile_pattern(pattern)
        for key, value in instance.items():
            if regex.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Keys of ``instance`` neither in ``properties`` nor matched by ``patternProperties`` (RE2)."""
    props = schema.get("properties", {})
    regexes = [compile_pattern(p) for p in schema.get("patternProperties", {})]
    return [k for k in instance if k not in props and not any(r.search(k) for r in regexes)]


def _additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield ValidationError(f"additional properties are not allowed ({', '.join(map(repr, extras[:5]))})")


def _canonical(value: Any) -> Any:
    """A hashable form under which two JSON values are equal exactly when JSON Schema says so."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", value)  # 1 == 1.0 and hash(1) == hash(1.0)
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("other", repr(value))


def _unique_items(validator: Validator, unique: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """``uniqueItems`` in linear time (jsonschema's own is quadratic on unsortable items)."""
    if unique and validator.is_type(instance, "array"):
        seen = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield ValidationError(f"array has non-unique elements ({str(item)[:80]})")
                return
            seen.add(key)


_OVERRIDES: dict[str, Keyword] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}

#: Draft 2020-12 with RE2 patterns, linear uniqueItems and every keyword on the step budget.
BoundedValidator = extend(
    Draft202012Validator,
    validators={
        name: _budgeted(_OVERRIDES.get(name, fn))
        for name, fn in {**Draft202012Validator.VALIDATORS, **_OVERRIDES}.items()
    },
)


def validator_for(schema: dict[str, Any]) -> Validator:
    """A bounded validator for ``schema`` that resolves only references inside it."""
    return BoundedValidator(schema, registry=REGISTRY)


def run_budgeted(fn: Callable[[], Any], budget: Budget) -> Any:
    """Call ``fn`` with ``budget`` as the current validation budget."""
    token = _BUDGET.set(budget)
    try:
        return fn()
    finally:
        _BUDGET.reset(token)


# --------------------------------------------------------------------------- request-time checks


#: Subschema keywords by shape, and whether they apply to a part of the value (``True``) or to
#: the value itself (``False``, in place: a ``$ref`` cycle through these never ends).
_ONE = {"not": False, "if": False, "then": False, "else": False,
        "items": True, "contains": True, "additionalProperties": True, "propertyNames": True}  # fmt: skip
_LIST = {"allOf": False, "anyOf": False, "oneOf": False, "prefixItems": True}
_MAP = {"dependentSchemas": False, "properties": True, "patternProperties": True}


def _children(node: dict[str, Any]) -> Iterator[tuple[str, Any, bool]]:
    """``(pointer suffix, subschema, consumes)`` of every subschema directly under ``node``."""
    for key, value in node.items():
        if key in _ONE and isinstance(value, dict):
            yield f"/{key}", value, _ONE[key]
        elif key in _LIST and isinstance(value, list):
            for i, sub in enumerate(value):
                yield f"/{key}/{i}", sub, _LIST[key]
        elif key in _MAP and isinstance(value, dict):
            for name, sub in value.items():
                yield f"/{key}/{name}", sub, _MAP[key]


def _walk(node: Any, where: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every subschema (dict) of ``node``, ``$defs`` included, with its JSON pointer."""
    if not isinstance(node, dict):
        return
    yield node, where
    for key in ("$defs", "definitions"):
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                yield from _walk(sub, f"{where}/{key}/{name}")
    for suffix, sub, _ in _children(node):
        yield from _walk(sub, where + suffix)


def _lookup(root: dict[str, Any], ref: str) -> Any:
    """The subschema a local reference ``#/a/b~1c`` names, or None."""
    node: Any = root
    for part in ref[2:].split("/"):
        part = unquote(part).replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict | bool) else None


def _expanded_size(root: dict[str, Any]) -> int:
    """Subschemas of ``root`` with every ``$ref`` expanded once (a recursive one counts 1); raise
    SchemaFeatureError on a ``$ref`` cycle that never moves into a part of the value."""
    sizes: dict[str, int] = {}
    entered: dict[str, int] = {}  # refs being expanded → the descent depth at which they were

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, dict):
            return 1
        total = 1
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(LOCAL_REF_PREFIXES):
            if ref in entered:
                if entered[ref] == depth:
                    raise SchemaFeatureError("", f"$ref {ref[:80]!r} refers back to itself in place")
                total += 1
            elif ref in sizes:
                total += sizes[ref]
            else:
                entered[ref] = depth
                sizes[ref] = size(_lookup(root, ref), depth)
                del entered[ref]
                total += sizes[ref]
        for _, sub, consumes in _children(node):
            total += size(sub, depth + consumes)
            if total > MAX_EXPANDED_SUBSCHEMAS:
                break
        return total

    return size(root, 0)


def check_schema_features(schema: dict[str, Any]) -> None:
    """Refuse, with :class:`SchemaFeatureError`, what the bounded validator does not run: any
    reference that is not ``#/$defs/...`` (remote, ``file:``, relative: never fetched or read,
    and the message never depends on what such a URI would find), ``$id``, ``$dynamicRef``,
    ``unevaluated*``, patterns RE2 cannot compile, ``$ref`` loops that stay in place and
    ``$ref`` graphs that expand past :data:`MAX_EXPANDED_SUBSCHEMAS`."""
    for node, where in _walk(schema, ""):
        for keyword, reason in REFUSED_KEYWORDS.items():
            if keyword in node:
                raise SchemaFeatureError(where, reason)
        if where and "$schema" in node:
            raise SchemaFeatureError(where, "$schema is accepted at the root only")
        ref = node.get("$ref")
        if ref is not None:
            if not isinstance(ref, str) or not ref.startswith(LOCAL_REF_PREFIXES):
                raise SchemaFeatureError(
                    where,
                    "$ref may only point inside the schema (#/$defs/...); schemas are data, "
                    "remote and file references are never fetched",
                )
            if _lookup(schema, ref) is None:
                raise SchemaFeatureError(where, f"$ref {ref[:80]!r} names nothing in the schema")
        patterns = list(node.get("patternProperties", {}) or {})
        if isinstance(node.get("pattern"), str):
            patterns.append(node["pattern"])
        for pattern in patterns:
            try:
                compile_pattern(pattern)
            except ValueError as e:
                raise SchemaFeatureError(where, str(e)) from None
    try:
        expanded = _expanded_size(schema)
    except RecursionError:
        raise SchemaFeatureError("", "its $refs chain too deep") from None
    if expanded > MAX_EXPANDED_SUBSCHEMAS:
        raise SchemaFeatureError(
            "", f"its $refs expand to more than {MAX_EXPANDED_SUBSCHEMAS} subschemas; reuse fewer levels"
        )
