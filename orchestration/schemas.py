"""Extraction schemas: the built-in ``email_entities``, checks on producers' own JSON Schemas,
the output schema sent to providers (each field wrapped as ``{value, confidence}``) and the
lenient, bounded parsing of what comes back (bad confidences clamped, bad fields dropped)."""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any, NamedTuple

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

from orchestration.errors import InvalidOutputError, InvalidRequestError
from orchestration.models import FieldValue, ParseNotes
from orchestration.schema_validator import (
    Budget,
    SchemaFeatureError,
    check_schema_features,
    run_budgeted,
    validator_for,
)

EMAIL_ENTITIES: dict[str, Any] = {
    "title": "email_entities",
    "type": "object",
    "properties": {
        "person_in_charge": {
            "type": ["string", "null"],
            "description": "Full name of the person responsible for the matter on the startup's side.",
        },
        "startup_name": {
            "type": ["string", "null"],
            "description": "Name of the startup the email is about.",
        },
        "partner_org": {
            "type": ["string", "null"],
            "description": "The partner organisation (investor, corporate, agency) involved.",
        },
        "details": {
            "type": ["string", "null"],
            "description": "One sentence on what is proposed or agreed.",
        },
        "date": {
            "type": ["string", "null"],
            "description": "The key date of the matter, as an ISO 8601 date (YYYY-MM-DD).",
        },
    },
}

BUILTIN_SCHEMAS: dict[str, dict[str, Any]] = {"email_entities": EMAIL_ENTITIES}
DEFAULT_SCHEMA = "email_entities"

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_FIELDS = 64
MAX_SCHEMA_DEPTH = 8
MAX_SCHEMA_BYTES = 32_768
#: Longest structured answer parsed, in characters of JSON (~40k tokens); longer is unusable.
MAX_OUTPUT_CHARS = 200_000
#: Root keywords carried over to the output schema, so that ``#/$defs/...`` still resolves.
DEFS_KEYWORDS = ("$defs", "definitions")
#: Draft 2020-12's meta-schema, checked with the bounded, retrieval-free validator.
_META = validator_for(Draft202012Validator.META_SCHEMA)


def _depth(node: Any, level: int = 0) -> int:
    if level > MAX_SCHEMA_DEPTH + 1:
        return level
    if isinstance(node, dict):
        return max((_depth(v, level + 1) for v in node.values()), default=level)
    if isinstance(node, list):
        return max((_depth(v, level + 1) for v in node), default=level)
    return level


def resolve_schema(schema_name: str | None, json_schema: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Return ``(name, schema)`` for a request, or raise :class:`InvalidRequestError`."""
    if json_schema is None:
        name = schema_name or DEFAULT_SCHEMA
        if name not in BUILTIN_SCHEMAS:
            raise InvalidRequestError(
                f"unknown schema_name {name!r}; built-in schemas: {sorted(BUILTIN_SCHEMAS)}",
                field="schema_name",
            )
        return name, BUILTIN_SCHEMAS[name]
    check_json_schema(json_schema)
    return str(json_schema.get("title") or "custom"), json_schema


def check_json_schema(schema: dict[str, Any]) -> None:
    """Refuse a producer's schema that is invalid, too big, too deep, not an object schema, or
    uses a feature the bounded validator does not run (non-local ``$ref``, ``$id``, non-RE2
    patterns...): all before any provider call."""
    if not isinstance(schema, dict):
        raise InvalidRequestError("json_schema must be a JSON object", field="json_schema")
    try:
        dumped = json.dumps(schema, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"json_schema is not JSON: {e}", field="json_schema") from None
    _check_dumped(dumped)


@lru_cache(maxsize=256)
def _check_dumped(dumped: str) -> None:
    """The checks of :func:`check_json_schema` on a schema's JSON text; a schema that passed is
    remembered, so every attempt of a job does not re-validate it (~1 ms of CPU each time)."""
    size = len(dumped)
    if size > MAX_SCHEMA_BYTES:
        raise InvalidRequestError(
            f"json_schema is {size} bytes; the limit is {MAX_SCHEMA_BYTES}", field="json_schema"
        )
    schema = json.loads(dumped)
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise InvalidRequestError(
            f"json_schema nests deeper than {MAX_SCHEMA_DEPTH} levels", field="json_schema"
        )
    # The meta-schema on the bounded validator: retrieval-free, and no format checker that would
    # compile the producer's patterns with Python's re.
    error = best_match(_META.iter_errors(schema))
    if error is not None:
        raise InvalidRequestError(
            f"json_schema is not a valid JSON Schema: {_clip(error.message)}", field="json_schema"
        )
    try:
        check_schema_features(schema)
    except SchemaFeatureError as e:
        raise InvalidRequestError(f"json_schema {e}", field="json_schema") from None
    props = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(props, dict) or not props:
        raise InvalidRequestError(
            "json_schema must be an object schema with at least one property",
            field="json_schema",
        )
    if len(props) > MAX_FIELDS:
        raise InvalidRequestError(
            f"json_schema has {len(props)} properties; the limit is {MAX_FIELDS}",
            field="json_schema",
        )
    for key in props:
        if not _FIELD_NAME.match(key):
            raise InvalidRequestError(
                f"json_schema property name {key!r} must match {_FIELD_NAME.pattern}",
                field="json_schema",
            )


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    types = prop.get("type")
    if types == "null" or (isinstance(types, list) and "null" in types):
        return prop
    if isinstance(types, str):
        return {**prop, "type": [types, "null"]}
    return {"anyOf": [prop, {"type": "null"}]}


def output_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema providers must fill: every field as ``{value, confidence}``, all required;
    the producer's ``$defs`` move along to the root, where ``#/$defs/...`` looks for them."""
    props = {
        name: {
            "type": "object",
            "properties": {
                "value": _nullable(prop),
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["value", "confidence"],
            "additionalProperties": False,
        }
        for name, prop in schema["properties"].items()
    }
    defs = {k: schema[k] for k in DEFS_KEYWORDS if k in schema}
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
        **defs,
    }


class ParsedOutput(NamedTuple):
    """A kept answer: the valid fields (dropped ones are absent) and what parsing changed."""

    fields: dict[str, FieldValue]
    notes: ParseNotes


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _load(raw: str | dict[str, Any], provider: str) -> dict[str, Any]:
    """The answer as a JSON object, size-bounded; InvalidOutputError when it is not one."""
    if isinstance(raw, str):
        if len(raw) > MAX_OUTPUT_CHARS:
            raise InvalidOutputError(
                f"{provider} returned {len(raw)} characters; the limit is {MAX_OUTPUT_CHARS}",
                provider=provider,
            )
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise InvalidOutputError(
                f"{provider} returned malformed JSON: {_clip(str(e))}", provider=provider
            ) from None
    else:
        data = raw
        try:
            size = len(json.dumps(raw))
        except (TypeError, ValueError, RecursionError):
            size = MAX_OUTPUT_CHARS + 1
        if size > MAX_OUTPUT_CHARS:
            raise InvalidOutputError(
                f"{provider} returned {size} characters of JSON; the limit is {MAX_OUTPUT_CHARS}",
                provider=provider,
            )
    if not isinstance(data, dict):
        raise InvalidOutputError(
            f"{provider} returned a JSON {type(data).__name__}, not an object", provider=provider
        )
    return data


def _confidence(stated: Any) -> tuple[float, bool]:
    """``stated`` as a confidence in [0, 1] and whether it had to be changed (clamped, NaN,
    missing or a string) to get there."""
    if isinstance(stated, bool) or not isinstance(stated, int | float | str):
        return 0.0, True
    try:
        number = float(stated.strip() if isinstance(stated, str) else stated)
    except ValueError:
        return 0.0, True
    except OverflowError:  # an integer beyond the float range
        number = math.inf if int(stated) > 0 else -math.inf
    if math.isnan(number):
        return 0.0, True
    clamped = min(max(number, 0.0), 1.0)
    return clamped, clamped != number or isinstance(stated, str)


def _finite(value: Any) -> str | None:
    """Why ``value`` is no JSON value (NaN or ±Infinity somewhere in it), None when it is one."""
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, RecursionError):
        return "holds NaN or Infinity, not JSON"
    return None


@lru_cache(maxsize=256)
def _field_validators(dumped: str) -> dict[str, Validator]:
    """Per field of a schema (as JSON text), a bounded validator of its ``value``."""
    out = output_schema(json.loads(dumped))
    root = validator_for(out)
    return {
        name: root.evolve(schema=wrapper["properties"]["value"])
        for name, wrapper in out["properties"].items()
    }


def _value_error(validator: Validator, value: Any, budget: Budget) -> str | None:
    """Why ``value`` fails its field's schema (the most relevant error), None when it passes."""
    try:
        error = run_budgeted(lambda: best_match(validator.iter_errors(value)), budget)
    except RecursionError:
        return "validation recursed too deep"
    except Exception as e:  # budget spent, or a reference the schema cannot resolve
        return _clip(f"validation failed: {e}")
    if error is None:
        return None
    path = "/".join(str(p) for p in error.absolute_path)
    return _clip(f"{path}: {error.message}" if path else error.message)


def parse_output(raw: str | dict[str, Any], schema: dict[str, Any], provider: str) -> ParsedOutput:
    """Parse a provider's structured answer leniently and within bounded cost.

    A confidence outside [0, 1] (or NaN, or a number in a string) is clamped and noted; a field
    missing or failing its schema is dropped and noted (it counts as missing); keys not in the
    schema are ignored and noted. Only an answer with no usable field at all (malformed or
    oversized JSON, not an object, every field dropped) raises :class:`InvalidOutputError`.
    """
    data = _load(raw, provider)
    validators = _field_validators(json.dumps(schema))
    budget = Budget()
    fields: dict[str, FieldValue] = {}
    notes = ParseNotes(ignored=[_clip(k, 64) for k in data if k not in validators][:16])
    for name, validator in validators.items():
        entry = data.get(name)
        if not isinstance(entry, dict) or "value" not in entry:
            notes.dropped[name] = "missing" if name not in data else "not a {value, confidence} object"
            continue
        problem = _finite(entry["value"]) or _value_error(validator, entry["value"], budget)
        if problem is not None:
            notes.dropped[name] = problem
            continue
        confidence, changed = _confidence(entry.get("confidence"))
        if changed:
            notes.clamped[name] = _clip(repr(entry.get("confidence")), 40)
        fields[name] = FieldValue(value=entry["value"], confidence=confidence)
    if not fields:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(notes.dropped.items())[:5])
        raise InvalidOutputError(
            _clip(f"{provider} output has no valid field ({reasons})", 600), provider=provider
        )
    return ParsedOutput(fields, notes)
