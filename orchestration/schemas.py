"""Extraction schemas: the built-in ``email_entities``, checks on producers' own JSON Schemas,
the output schema sent to providers (each field wrapped as ``{value, confidence}``) and the
validation of what comes back."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from orchestration.errors import InvalidOutputError, InvalidRequestError
from orchestration.models import FieldValue

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
    """Refuse a producer's schema that is invalid, too big, too deep or not an object schema."""
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
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise InvalidRequestError(
            f"json_schema is not a valid JSON Schema: {e.message}", field="json_schema"
        ) from None
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
    """The schema providers must fill: every field as ``{value, confidence}``, all required."""
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
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def parse_output(raw: str | dict[str, Any], schema: dict[str, Any], provider: str) -> dict[str, FieldValue]:
    """Parse and validate a provider's structured output; raise :class:`InvalidOutputError`."""
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise InvalidOutputError(f"{provider} returned malformed JSON: {e}", provider=provider) from None
    else:
        data = raw
    try:
        Draft202012Validator(output_schema(schema)).validate(data)
    except ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise InvalidOutputError(
            f"{provider} output failed the schema at {path}: {e.message}", provider=provider
        ) from None
    return {name: FieldValue(**data[name]) for name in schema["properties"]}
