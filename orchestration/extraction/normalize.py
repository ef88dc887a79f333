"""Normalisation of extracted values into comparison keys, and the similarity test on those keys.

Two candidates agree on a field when their *keys* agree: text is NFKC-normalised, case-folded,
whitespace-collapsed and stripped of surrounding punctuation and quotes; anything that reads as
a calendar date becomes ISO ``YYYY-MM-DD``; numbers, booleans, lists and objects become
canonical JSON. "Null-like" answers (``""``, ``"null"``, ``"N/A"``, ``"없음"``, ``[]``...) become
``None``, a vote for "the email does not state it".

Fuzzy matching (Jaro-Winkler) applies only to free text, and only when both texts carry the
same digit runs, so ``2025-03-14`` never matches ``2025-03-15`` and ``100`` never ``1000``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from rapidfuzz.distance import JaroWinkler

#: Normalised strings that mean "no value" (compared after normalisation).
_NULL_TOKENS = frozenset(
    {
        "null", "none", "nil", "n/a", "unknown", "not specified", "not mentioned",
        "not available", "not provided", "not stated", "-", "--", "—", "없음", "해당 없음",
        "해당없음", "미상", "알 수 없음",
    }
)  # fmt: skip

# Characters stripped from both ends (after NFKC, full-width forms are already ASCII).
_EDGE = " \t\n\r\f\v.,;:!?*…·・、。\"'`“”‘’„‟‹›«»「」『』〝〞〟"
_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">", "【": "】", "〈": "〉", "《": "》", "〔": "〕"}

_MONTHS = {
    name: i
    for i, names in enumerate(
        (
            ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"),
            ("may",), ("june", "jun"), ("july", "jul"), ("august", "aug"),
            ("september", "sep", "sept"), ("october", "oct"), ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}  # fmt: skip
_WEEKDAYS = frozenset(
    {
        "monday", "mon", "tuesday", "tue", "tues", "wednesday", "wed", "thursday", "thu",
        "thur", "thurs", "friday", "fri", "saturday", "sat", "sunday", "sun",
    }
)  # fmt: skip
_KO_WEEKDAY = r"[월화수목금토일](?:요일)?"
_WEEKDAY_SUFFIX = re.compile(rf"\s*\(\s*(?:{_KO_WEEKDAY}|[a-z]{{3,9}})\s*\)$|\s+{_KO_WEEKDAY}$")
_YMD = re.compile(r"^(\d{4})\s*([-/.])\s*(\d{1,2})\s*\2\s*(\d{1,2})$")
_XXY = re.compile(r"^(\d{1,2})([-/.])(\d{1,2})\2(\d{4})$")
_ISO_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[t ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:z|[+-]\d{2}:?\d{2})?$"
)
_CJK = re.compile(r"^(\d{4})\s*[년年]\s*(\d{1,2})\s*[월月]\s*(\d{1,2})\s*[일日]?$")
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DAY = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)?$")
_TOKEN_SPLIT = re.compile(r"[\s,./-]+")
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Norm:
    """A value prepared for voting: comparison key, whether fuzzy matching applies, report form."""

    key: str | None
    fuzzy: bool
    display: Any
    digits: tuple[str, ...] = ()


def _is_date_field(field: str) -> bool:
    """Whether a field's name says it holds a date (``date``, ``due_date``, ``date_signed``)."""
    name = field.casefold()
    return name == "date" or name.endswith("_date") or name.startswith("date_")


def _safe_date(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def _day_month(a: int, b: int, y: int, dayfirst: bool | None) -> date | None:
    """``a/b/y`` as day/month or month/day; None when both readings are valid and differ."""
    if a > 12 or (dayfirst is True and b <= 12):
        return _safe_date(y, b, a)
    if b > 12 or dayfirst is False or a == b:
        return _safe_date(y, a, b)
    return None  # 03/04/2025: ambiguous


def _parse_words(s: str) -> date | None:
    """``March 14, 2025``, ``14 Mar 2025``, ``Fri, 14th of March 2025`` and the like."""
    tokens = [t for t in _TOKEN_SPLIT.split(s) if t and t not in ("of", "the")]
    if tokens and tokens[0] in _WEEKDAYS:
        tokens = tokens[1:]
    if len(tokens) != 3:
        return None
    year = month = day = None
    for tok in tokens:
        if len(tok) == 4 and tok.isdigit() and year is None:
            year = int(tok)
        elif tok in _MONTHS and month is None:
            month = _MONTHS[tok]
        elif (m := _DAY.match(tok)) and day is None:
            day = int(m.group(1))
        else:
            return None
    if year is None or month is None or day is None:
        return None
    return _safe_date(year, month, day)


def _parse_normalized(s: str, *, compact: bool, dayfirst: bool | None) -> date | None:
    """Parse an already normalised (case-folded, collapsed) string as a whole date."""
    if not s or not any(c.isdigit() for c in s) or len(s) > 48:
        return None
    s = _WEEKDAY_SUFFIX.sub("", s).rstrip(".")
    if m := (_YMD.match(s) or _ISO_TIME.match(s)):
        y, mo, d = m.group(1), m.group(3 if m.re is _YMD else 2), m.group(4 if m.re is _YMD else 3)
        return _safe_date(int(y), int(mo), int(d))
    if m := _CJK.match(s):
        return _safe_date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    if m := _XXY.match(s):
        return _day_month(int(m.group(1)), int(m.group(3)), int(m.group(4)), dayfirst)
    if compact and (m := _COMPACT.match(s)):
        return _safe_date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    if any(c.isalpha() for c in s):
        return _parse_words(s)
    return None


def parse_date(text: str, *, compact: bool = False, dayfirst: bool | None = None) -> date | None:
    """The date a whole string states (many formats), or None; ambiguous ``03/04/2025`` → None."""
    return _parse_normalized(normalize_text(text), compact=compact, dayfirst=dayfirst)


def _wraps(s: str) -> bool:
    """Whether the first character opens a bracket that the last character closes."""
    close = _PAIRS.get(s[0])
    if close is None or s[-1] != close:
        return False
    depth = 0
    for i, c in enumerate(s):
        if c == s[0]:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


def _fold(text: str) -> str:
    """NFKC + casefold until stable (casefolding can produce strings NFKC changes again)."""
    s = unicodedata.normalize("NFKC", text)
    for _ in range(4):
        t = unicodedata.normalize("NFKC", s.casefold())
        if t == s:
            break
        s = t
    return s


def normalize_text(text: str) -> str:
    """Fold case and width, collapse whitespace, strip surrounding punctuation, quotes, brackets."""
    s = " ".join(_fold(text).split())
    while True:
        t = " ".join(s.strip(_EDGE).split())
        if len(t) >= 2 and _wraps(t):
            t = t[1:-1]
        if t == s:
            return s
        s = t


@lru_cache(maxsize=8192)
def _normalize_str(text: str, date_field: bool) -> tuple[str | None, str | None]:
    """(comparison key, ISO date or None) of one string; cached because values repeat."""
    s = normalize_text(text)
    if not s or s in _NULL_TOKENS:
        return None, None
    d = _parse_normalized(s, compact=date_field, dayfirst=None)
    if d is not None:
        iso = d.isoformat()
        return iso, iso
    return s, None


def _canon(field: str, value: Any) -> Any:
    """JSON-ready canonical form of a non-string value (strings inside are normalised)."""
    if isinstance(value, str):
        return _normalize_str(value, _is_date_field(field))[0]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_canon(field, v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canon(field, v) for k, v in value.items()}
    return _normalize_str(str(value), False)[0]


def normalize_value(field: str, value: Any) -> str | None:
    """The comparison key of a field's value: normalised text, ISO date, canonical JSON, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return _normalize_str(value, _is_date_field(field))[0]
    if isinstance(value, list | tuple | dict) and not value:
        return None
    canon = _canon(field, value)
    if isinstance(canon, str):  # an unknown scalar type rendered as text
        return canon
    return json.dumps(canon, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def prepare(field: str, value: Any) -> Norm:
    """Key, fuzziness and report form of a value (dates are reported in ISO form)."""
    if isinstance(value, str):
        key, iso = _normalize_str(value, _is_date_field(field))
        if key is None:
            return Norm(None, False, None)
        if iso is not None:
            return Norm(key, False, iso)
        return Norm(key, True, value, tuple(_DIGITS.findall(key)))
    key = normalize_value(field, value)
    return Norm(key, False, None if key is None else value)


def same_value(a: Norm, b: Norm, threshold: float) -> bool:
    """Whether two prepared values agree: equal keys, or similar free text with equal digits."""
    if a.key is None or b.key is None:
        return a.key is b.key
    if a.key == b.key:
        return True
    if not (a.fuzzy and b.fuzzy) or a.digits != b.digits:
        return False
    return JaroWinkler.normalized_similarity(a.key, b.key, score_cutoff=threshold) >= threshold
