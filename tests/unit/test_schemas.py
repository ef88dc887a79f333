"""Producers' schemas are data: no reference leaves the schema, patterns run on RE2, validation is
bounded; and providers' answers are parsed leniently (clamped confidences, dropped fields)."""

from __future__ import annotations

import http.server
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestration.errors import InvalidOutputError, InvalidRequestError
from orchestration.schema_validator import MAX_EXPANDED_SUBSCHEMAS, MAX_VALIDATION_STEPS, compile_pattern
from orchestration.schemas import (
    EMAIL_ENTITIES,
    MAX_OUTPUT_CHARS,
    check_json_schema,
    output_schema,
    parse_output,
    resolve_schema,
)


def _schema(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def _answer(**values: Any) -> dict[str, Any]:
    return {k: {"value": v, "confidence": 0.9} for k, v in values.items()}


def _refused(schema: dict[str, Any]) -> str:
    with pytest.raises(InvalidRequestError) as info:
        check_json_schema(schema)
    assert info.value.details.get("field") == "json_schema"
    return str(info.value.message)


# --------------------------------------------------------------------------- references


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server serving a schema; the list records every path requested."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = json.dumps({"type": "string", "maxLength": 1}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def test_http_ref_is_refused_without_a_request(http_server: tuple[str, list[str]]) -> None:
    url, hits = http_server
    for schema in (
        _schema(x={"$ref": f"{url}/evil.json"}),
        _schema(x={"anyOf": [{"type": "null"}, {"$ref": f"{url}/evil.json#/a"}]}),
        {**_schema(x={"type": "string"}), "$defs": {"d": {"$ref": f"{url}/unused.json"}}},
    ):
        assert "never fetched" in _refused(schema)
    # and the parser, should a schema get past the checks, never fetches either
    parsed = parse_output(
        _answer(x="abc", y="ok"), _schema(x={"$ref": f"{url}/evil.json"}, y={"type": "string"}), "p"
    )
    assert parsed.notes.dropped.keys() == {"x"} and "y" in parsed.fields
    assert hits == []


def test_file_ref_gives_the_same_message_whether_or_not_the_file_exists(tmp_path: Path) -> None:
    existing = tmp_path / "there.json"
    existing.write_text(json.dumps({"type": "string"}))
    missing = tmp_path / "not-there.json"
    messages = {_refused(_schema(x={"$ref": path.as_uri()})) for path in (existing, missing)} | {
        _refused(_schema(x={"$ref": str(path)})) for path in (existing, missing)
    }
    assert len(messages) == 1, messages
    assert str(tmp_path) not in messages.pop()


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({**_schema(x={"type": "string"}), "$id": "http://example.invalid/s"}, "$id"),
        (_schema(x={"$id": "file:///etc/", "type": "string"}), "$id"),
        (_schema(x={"$dynamicRef": "#meta"}), "$dynamicRef"),
        (_schema(x={"$ref": "#/properties/y"}, y={"type": "string"}), "#/$defs"),
        (_schema(x={"$ref": "#"}), "#/$defs"),
        (_schema(x={"$ref": "#/$defs/nope"}), "names nothing"),
        (_schema(x={"type": "object", "unevaluatedProperties": False}), "unevaluatedProperties"),
        (_schema(x={"$schema": "http://example.invalid/meta", "type": "string"}), "$schema"),
    ],
)
def test_other_reference_features_are_refused(schema: dict[str, Any], named: str) -> None:
    assert named in _refused(schema)


LOCAL = {
    "type": "object",
    "$defs": {
        "name": {"type": ["string", "null"], "maxLength": 40},
        "amount": {"type": "object", "properties": {"eur": {"$ref": "#/$defs/positive"}}},
        "positive": {"type": "number", "minimum": 0},
    },
    "definitions": {"day": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}},
    "properties": {
        "startup_name": {"$ref": "#/$defs/name"},
        "budget": {"$ref": "#/$defs/amount"},
        "date": {"$ref": "#/definitions/day"},
    },
}


def test_local_refs_resolve_after_wrapping() -> None:
    name, schema = resolve_schema(None, LOCAL)
    assert name == "custom"
    out = output_schema(schema)
    assert out["$defs"] == LOCAL["$defs"] and out["definitions"] == LOCAL["definitions"]
    good = _answer(startup_name="Acme", budget={"eur": 5}, date="2026-01-31")
    parsed = parse_output(json.dumps(good), schema, "p")
    assert parsed.fields["budget"].value == {"eur": 5}
    assert parsed.notes.dropped == {}
    bad = _answer(startup_name="x" * 41, budget={"eur": -1}, date="31/01/2026")
    bad["ok"] = {"value": 1, "confidence": 1}
    with pytest.raises(InvalidOutputError, match="no valid field"):
        parse_output(bad, schema, "p")
    mixed = parse_output(_answer(startup_name="Acme", budget={"eur": -1}, date=None), schema, "p")
    assert set(mixed.fields) == {"startup_name", "date"}
    assert "eur" in mixed.notes.dropped["budget"]


# --------------------------------------------------------------------------- patterns


def test_patterns_run_on_re2() -> None:
    schema = _schema(code={"type": "string", "pattern": r"^[A-Z]{3}-\d+$"})
    check_json_schema(schema)
    assert parse_output(_answer(code="ABC-12"), schema, "p").fields["code"].value == "ABC-12"
    with pytest.raises(InvalidOutputError, match="does not match"):
        parse_output(_answer(code="abc-12"), schema, "p")


@pytest.mark.parametrize("pattern", [r"^(a)\1$", r"^(?=a)a", r"(?<!x)y", r"a{2000}"])
def test_patterns_re2_cannot_run_are_refused(pattern: str) -> None:
    assert "RE2" in _refused(_schema(x={"type": "string", "pattern": pattern}))
    assert "RE2" in _refused(_schema(x={"type": "object", "patternProperties": {pattern: {}}}))


@pytest.mark.timeout(10)
def test_catastrophic_pattern_answers_correctly_and_bounded() -> None:
    """``^(a+)+$`` takes Python's re minutes on 30 a's and a '!'; RE2 answers at once."""
    schema = _schema(x={"type": "string", "pattern": "^(a+)+$"})
    check_json_schema(schema)
    hostile = "a" * 5000 + "!"
    assert compile_pattern("^(a+)+$").search(hostile) is None
    with pytest.raises(InvalidOutputError, match="does not match"):
        parse_output(_answer(x=hostile), schema, "p")
    assert parse_output(_answer(x="a" * 5000), schema, "p").fields["x"].value == "a" * 5000


@pytest.mark.timeout(10)
def test_pattern_properties_and_additional_properties_use_re2() -> None:
    schema = _schema(
        tags={
            "type": "object",
            "patternProperties": {"^(a+)+$": {"type": "integer"}},
            "additionalProperties": False,
        }
    )
    check_json_schema(schema)
    ok = parse_output(_answer(tags={"aaa": 1}), schema, "p")
    assert ok.fields["tags"].value == {"aaa": 1}
    for bad in ({"aaa": "one"}, {"a" * 3000 + "!": 1}):
        with pytest.raises(InvalidOutputError):
            parse_output(_answer(tags=bad), schema, "p")


# --------------------------------------------------------------------------- bounds


def test_oversized_and_deep_answers_are_invalid_output() -> None:
    with pytest.raises(InvalidOutputError, match=str(MAX_OUTPUT_CHARS)):
        parse_output(json.dumps(_answer(person_in_charge="x" * MAX_OUTPUT_CHARS)), EMAIL_ENTITIES, "p")
    with pytest.raises(InvalidOutputError, match="malformed"):
        parse_output("[" * 100_000, EMAIL_ENTITIES, "p")
    with pytest.raises(InvalidOutputError, match="not an object"):
        parse_output("[1, 2]", EMAIL_ENTITIES, "p")


@pytest.mark.timeout(10)
def test_unique_items_is_linear_and_exact() -> None:
    schema = _schema(xs={"type": "array", "uniqueItems": True})
    distinct = [{"a": i} for i in range(15_000)]  # quadratic: ~10^8 comparisons
    assert parse_output({"xs": {"value": distinct, "confidence": 1}}, schema, "p").fields["xs"]
    for dup in ([1, 1.0], [{"a": [1]}, {"a": [1.0]}], ["x", "x"]):
        with pytest.raises(InvalidOutputError, match="non-unique"):
            parse_output(_answer(xs=dup), schema, "p")
    assert parse_output(_answer(xs=[1, True, "1", None, 0, False]), schema, "p").fields["xs"]


def _doubling_defs(levels: int) -> dict[str, Any]:
    """Each level references the previous one twice: 2^levels evaluations unbounded."""
    defs: dict[str, Any] = {"d0": {"type": "string", "minLength": 2}}
    for i in range(1, levels + 1):
        defs[f"d{i}"] = {"allOf": [{"$ref": f"#/$defs/d{i - 1}"}, {"$ref": f"#/$defs/d{i - 1}"}]}
    return defs


def test_exploding_and_looping_refs_are_refused_up_front() -> None:
    exploding = {**_schema(x={"$ref": "#/$defs/d30"}), "$defs": _doubling_defs(30)}
    assert str(MAX_EXPANDED_SUBSCHEMAS) in _refused(exploding)
    modest = {**_schema(x={"$ref": "#/$defs/d8"}), "$defs": _doubling_defs(8)}  # 2^8: fine
    check_json_schema(modest)
    assert parse_output(_answer(x="abc"), modest, "p").fields["x"].value == "abc"
    for defs in (
        {"a": {"$ref": "#/$defs/a"}},
        {"a": {"$ref": "#/$defs/b"}, "b": {"not": {"$ref": "#/$defs/a"}}},
    ):
        assert "refers back to itself" in _refused({**_schema(x={"$ref": "#/$defs/a"}), "$defs": defs})


def test_a_long_ref_chain_never_crashes() -> None:
    """900 links fit in 32 KiB; checking them stays within Python's recursion limit, validating
    them does not: the parser drops the field instead of failing the attempt with a crash."""
    defs: dict[str, Any] = {str(i): {"$ref": f"#/$defs/{i + 1}"} for i in range(900)}
    defs["900"] = {"type": "string"}
    schema = {**_schema(y={"type": "string"}, x={"$ref": "#/$defs/0"}), "$defs": defs}
    check_json_schema(schema)
    parsed = parse_output(_answer(x="v", y="w"), schema, "p")
    assert parsed.notes.dropped["x"] == "validation recursed too deep" and parsed.fields["y"].value == "w"


TREE = {  # a recursive schema is fine: each level of the value is one level of the schema
    "type": "object",
    "$defs": {"node": {"type": "object", "properties": {
        "name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
    "properties": {"org": {"$ref": "#/$defs/node"}},
}  # fmt: skip


def test_recursive_schema_validates_nested_values() -> None:
    check_json_schema(TREE)
    org = {"name": "Acme", "children": [{"name": "Labs", "children": [{"name": "Robotics"}]}]}
    assert parse_output(_answer(org=org), TREE, "p").fields["org"].value == org
    org["children"][0]["children"][0]["name"] = 7
    with pytest.raises(InvalidOutputError, match="children/0/children/0/name"):
        parse_output(_answer(org=org), TREE, "p")


@pytest.mark.timeout(20)
def test_fan_out_on_deep_values_is_cut_by_the_step_budget() -> None:
    """Two in-place branches per level of a nested array: 2^depth evaluations unbounded."""
    fan = {"allOf": [{"type": "array", "items": {"$ref": "#/$defs/fan"}}, {"items": {"$ref": "#/$defs/fan"}}]}
    y_first = {**_schema(y={"type": "string"}, x={"$ref": "#/$defs/fan"}), "$defs": {"fan": fan}}
    check_json_schema(y_first)
    deep: Any = []
    for _ in range(40):
        deep = [deep]
    parsed = parse_output(_answer(y="fine", x=deep), y_first, "p")
    assert str(MAX_VALIDATION_STEPS) in parsed.notes.dropped["x"]
    assert parsed.fields["y"].value == "fine"  # checked first, while the budget lasted
    x_first = {**y_first, "properties": dict(reversed(list(y_first["properties"].items())))}
    with pytest.raises(InvalidOutputError, match=str(MAX_VALIDATION_STEPS)):  # one budget per answer
        parse_output(_answer(y="fine", x=deep), x_first, "p")
    assert parse_output(_answer(y="ok", x=[[[]]]), y_first, "p").fields["x"].value == [[[]]]


def test_self_referencing_schema_does_not_crash_the_parser() -> None:
    """check_json_schema refuses it; should one reach the parser anyway, the field is dropped."""
    schema = {**_schema(x={"$ref": "#/$defs/a"}, y={"type": "string"}), "$defs": {"a": {"$ref": "#/$defs/a"}}}
    parsed = parse_output(_answer(x="v", y="w"), schema, "p")
    assert "x" in parsed.notes.dropped and parsed.fields["y"].value == "w"


# --------------------------------------------------------------------------- lenient parsing


@pytest.mark.parametrize(
    ("stated", "kept"),
    [(10000, 1.0), (math.inf, 1.0), (-1, 0.0), (-math.inf, 0.0), (math.nan, 0.0), ("0.8", 0.8),
     ("95", 1.0), ("high", 0.0), (None, 0.0), (True, 0.0), ([0.5], 0.0), (10**400, 1.0),
     (-(10**400), 0.0), ("1e400", 1.0)],
)  # fmt: skip
def test_out_of_range_confidence_is_clamped_and_noted(stated: Any, kept: float) -> None:
    answer = _answer(person_in_charge="Ada", startup_name="Acme")
    answer["person_in_charge"]["confidence"] = stated
    raw = json.dumps(answer)  # Python's json writes inf/nan as Infinity/NaN, as weak models do
    parsed = parse_output(raw, EMAIL_ENTITIES, "p")
    assert parsed.fields["person_in_charge"].value == "Ada"
    assert parsed.fields["person_in_charge"].confidence == pytest.approx(kept)
    assert list(parsed.notes.clamped) == ["person_in_charge"]
    assert parsed.fields["startup_name"].confidence == 0.9
    assert parsed.notes.partial  # the three fields it did not give are dropped


def test_clean_answer_has_empty_notes() -> None:
    answer = _answer(person_in_charge="Ada", startup_name="Acme", partner_org=None, details="d", date=None)
    parsed = parse_output(answer, EMAIL_ENTITIES, "p")
    assert set(parsed.fields) == set(EMAIL_ENTITIES["properties"])
    assert parsed.notes.clamped == {} and parsed.notes.dropped == {} and parsed.notes.ignored == []
    assert not parsed.notes.partial


def test_partial_answer_keeps_valid_fields_and_names_the_dropped() -> None:
    answer = _answer(person_in_charge="Ada", startup_name=42, details="d")
    answer["partner_org"] = "Globex"  # not wrapped
    answer["password"] = {"value": "hunter2", "confidence": 1}
    parsed = parse_output(answer, EMAIL_ENTITIES, "p")
    assert set(parsed.fields) == {"person_in_charge", "details"}
    assert set(parsed.notes.dropped) == {"startup_name", "partner_org", "date"}
    assert parsed.notes.dropped["date"] == "missing"
    assert "not of type" in parsed.notes.dropped["startup_name"]
    assert parsed.notes.ignored == ["password"]


def test_non_finite_values_are_dropped() -> None:
    raw = '{"date": {"value": NaN, "confidence": 1}, "details": {"value": [1, -Infinity], "confidence": 1},'
    raw += ' "startup_name": {"value": "Acme", "confidence": 1}}'
    parsed = parse_output(raw, EMAIL_ENTITIES, "p")
    assert (
        parsed.notes.dropped["date"] == parsed.notes.dropped["details"] == "holds NaN or Infinity, not JSON"
    )
    assert parsed.fields["startup_name"].value == "Acme"


@pytest.mark.parametrize(
    "raw",
    ['{"person_in_charge": {"value": "Ada"', "null", '"text"', "{}", json.dumps({"x": 1}),
     json.dumps(_answer(person_in_charge=3, startup_name=[1]))],
)  # fmt: skip
def test_wholly_unusable_answers_raise(raw: str) -> None:
    with pytest.raises(InvalidOutputError) as info:
        parse_output(raw, EMAIL_ENTITIES, "prov")
    assert info.value.details["provider"] == "prov"
    assert str(info.value).startswith("prov")
