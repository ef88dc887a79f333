"""The extraction prompt's field list: the same text as ``json.dumps(..., indent=1)``."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from orchestration.prompts import EMAIL_CLOSE, EMAIL_OPEN, extraction_prompt, fields_json

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@given(st.dictionaries(st.text(), st.text(), max_size=8))
def test_flat_string_fields_read_as_json_dumps_writes_them(fields: dict[str, str]) -> None:
    assert fields_json(fields) == json.dumps(fields, ensure_ascii=False, indent=1)


@given(st.dictionaries(st.text(), JSON_VALUES, max_size=5))
def test_any_other_descriptions_read_the_same_too(fields: dict[str, object]) -> None:
    """A producer's schema may give a description that is not a string."""
    assert fields_json(fields) == json.dumps(fields, ensure_ascii=False, indent=1)


def test_the_prompt_lists_the_fields_then_the_email_between_markers() -> None:
    schema = {"properties": {"date": {"description": "ISO date"}, "name": {"type": "string"}}}
    prompt = extraction_prompt("Hello\nDana", schema)
    assert prompt == (
        'Fields to extract:\n{\n "date": "ISO date",\n "name": ""\n}\n\n'
        f"{EMAIL_OPEN}\nHello\nDana\n{EMAIL_CLOSE}"
    )
