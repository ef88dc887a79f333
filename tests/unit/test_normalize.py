"""Normalisation: text folding, date formats, canonical JSON, the similarity test."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestration.extraction import normalize_value
from orchestration.extraction.normalize import normalize_text, parse_date, prepare, same_value


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Acme", "acme"),
        ("ＡＣＭＥ　Ｃｏｒｐ", "acme corp"),  # full-width letters and ideographic space (NFKC)
        ("ﬁnance", "finance"),  # ligature (NFKC)
        ("Straße", "strasse"),  # casefold, not lower
        ("  Kim \t\n Min-jun  ", "kim min-jun"),
        ('"Acme Inc."', "acme inc"),
        ("“Acme”", "acme"),
        ("「스타트업」", "스타트업"),
        ("'Acme',", "acme"),
        ("**Acme**", "acme"),
        ("(Acme)", "acme"),
        ("[(Acme)]", "acme"),
        ("(주)스타트업", "(주)스타트업"),  # a leading bracket that does not wrap stays
        ("(a) b (c)", "(a) b (c)"),
        ("Acme (Korea)", "acme (korea)"),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_value("startup_name", raw) == expected


@pytest.mark.parametrize(
    "raw", [None, "", "   ", "null", "None", "N/A", "n/a.", "Unknown", "없음", "-", [], {}]
)
def test_null_like_values_are_none(raw: object) -> None:
    assert normalize_value("partner_org", raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        "2025-03-14",
        "2025/03/14",
        "2025.03.14",
        "2025.3.14.",
        "2025. 3. 14.",
        "14/03/2025",
        "14.03.2025",
        "14-03-2025",
        "03/14/2025",
        "March 14, 2025",
        "march 14 2025",
        "14 Mar 2025",
        "14 March 2025",
        "Mar 14 2025",
        "Mar. 14, 2025",
        "14-Mar-2025",
        "Friday, March 14th, 2025",
        "the 14th of March, 2025",
        "2025년 3월 14일",
        "2025년 03월 14일 (금)",
        "2025년 3월 14일 금요일",
        "2025年3月14日",
        "2025-03-14T09:30:00Z",
        "2025-03-14 09:30",
        "2025-03-14T09:30:00+09:00",
        "１４／０３／２０２５",  # full-width digits
    ],
)
def test_dates_to_iso(raw: str) -> None:
    assert normalize_value("date", raw) == "2025-03-14"
    assert parse_date(raw) == date(2025, 3, 14)


def test_dates_in_any_field_and_sept() -> None:
    assert normalize_value("details", "March 14, 2025") == "2025-03-14"
    assert normalize_value("date", "Sept 1, 2025") == "2025-09-01"


def test_ambiguous_and_invalid_dates_stay_text() -> None:
    assert parse_date("03/04/2025") is None
    assert normalize_value("date", "03/04/2025") == "03/04/2025"
    assert parse_date("03/04/2025", dayfirst=True) == date(2025, 4, 3)
    assert parse_date("03/04/2025", dayfirst=False) == date(2025, 3, 4)
    assert parse_date("04/04/2025") == date(2025, 4, 4)  # both readings agree
    assert parse_date("2025-02-30") is None
    assert parse_date("March 2025") is None
    assert parse_date("Meeting on March 14, 2025") is None
    assert parse_date("14 13 2025") is None


def test_compact_dates_only_in_date_fields() -> None:
    assert normalize_value("date", "20250314") == "2025-03-14"
    assert normalize_value("due_date", "20250314") == "2025-03-14"
    assert normalize_value("invoice_number", "20250314") == "20250314"


def test_non_strings_to_canonical_json() -> None:
    assert normalize_value("n", 42) == "42"
    assert normalize_value("n", 42.0) == "42"
    assert normalize_value("n", 4.5) == "4.5"
    assert normalize_value("n", True) == "true"
    assert normalize_value("n", ["B", " a "]) == '["b","a"]'
    assert normalize_value("n", {"b": 1, "a": "X"}) == '{"a":"x","b":1}'
    assert normalize_value("n", "42") == normalize_value("n", 42)


def test_prepare_reports_dates_in_iso_and_keeps_text() -> None:
    assert prepare("date", "March 14, 2025").display == "2025-03-14"
    assert prepare("x", " Acme Inc. ").display == " Acme Inc. "
    assert prepare("x", "N/A").display is None


def test_same_value() -> None:
    t = 0.85
    assert same_value(prepare("x", "Kim Min-jun"), prepare("x", "kim minjun"), t)
    assert same_value(prepare("x", "Acme Corporation"), prepare("x", "Acme Corporaton"), t)
    assert not same_value(prepare("x", "Acme"), prepare("x", "Globex"), t)
    assert not same_value(prepare("x", "2025-03-14"), prepare("x", "2025-03-15"), t)
    assert not same_value(prepare("x", "Room 100"), prepare("x", "Room 1000"), t)
    assert not same_value(prepare("x", ["a", "b"]), prepare("x", ["a", "c"]), t)
    assert same_value(prepare("x", None), prepare("x", "N/A"), t)
    assert not same_value(prepare("x", None), prepare("x", "Acme"), t)
    # the threshold is honoured
    a, b = prepare("x", "Kim Min-jun"), prepare("x", "Kim Min-ho")
    assert same_value(a, b, 0.8)
    assert not same_value(a, b, 0.95)


@given(st.text(max_size=40))
def test_normalize_text_is_idempotent(s: str) -> None:
    once = normalize_text(s)
    assert normalize_text(once) == once


@given(
    st.one_of(st.text(max_size=40), st.dates().map(lambda d: d.strftime("%d %b %Y"))),
    st.sampled_from(["date", "x"]),
)
def test_normalize_value_is_idempotent(s: str, field: str) -> None:
    once = normalize_value(field, s)
    assert normalize_value(field, once) == once


@given(st.dates(min_value=date(1000, 1, 1)))
def test_every_unambiguous_format_round_trips(d: date) -> None:
    for fmt in ("%Y-%m-%d", "%B %d, %Y", "%d %b %Y", "%b %d %Y", "%Y.%m.%d", "%Y년 %m월 %d일"):
        assert parse_date(d.strftime(fmt)) == d, fmt
