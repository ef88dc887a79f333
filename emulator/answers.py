"""Structured extraction answers: labels from the data set with per-field noise, or guesses.

Each field of the requested schema is answered as ``{"value": ..., "confidence": ...}``. A
known email gets its label, or with the profile's rates a wrong value, a near miss, a null or
a swapped entity; confidence is high for correct values and lower (but overlapping) for noisy
ones, so it is informative yet imperfect. Unknown text is answered by :mod:`heuristics`.
"""

from __future__ import annotations

import json
import random
import re
import string
from datetime import date, timedelta
from typing import Any

from emulator.dataset import Dataset, Known
from emulator.heuristics import guess
from emulator.profile import NoiseRates, ProviderProfile

ENTITY_FIELDS = frozenset({"person_in_charge", "startup_name", "partner_org"})
_SWAP = {"startup_name": "partner_org", "partner_org": "startup_name"}
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def schema_fields(schema: dict[str, Any]) -> list[tuple[str, bool]]:
    """``(field, wrapped)`` for each property; wrapped fields want ``{value, confidence}``."""
    props = schema.get("properties") or {}
    out = []
    for name, prop in props.items():
        inner = prop.get("properties") if isinstance(prop, dict) else None
        out.append((name, isinstance(inner, dict) and "value" in inner and "confidence" in inner))
    return out


def noise_scale(profile: ProviderProfile, temperature: float | None) -> float:
    """How much sampling temperature multiplies the noise and defect rates."""
    return 1.0 + profile.temperature_noise * max(0.0, temperature or 0.0)


def _draw_noise(rates: NoiseRates, scale: float, rng: random.Random) -> str | None:
    kinds = {"wrong": rates.wrong, "near_miss": rates.near_miss, "drop": rates.drop, "swap": rates.swap}
    total = sum(kinds.values()) * scale
    if total <= 0:
        return None
    norm = scale if total <= 1 else scale / total
    u = rng.random()
    for kind, rate in kinds.items():
        u -= rate * norm
        if u < 0:
            return kind
    return None


def near_miss(value: str, rng: random.Random) -> str:
    """``value`` one edit away: a neighbouring day for ISO dates, else one character changed."""
    if _ISO_DATE.match(value):
        try:
            return (date.fromisoformat(value) + timedelta(days=rng.choice((-1, 1)))).isoformat()
        except ValueError:
            pass
    letters = [i for i, ch in enumerate(value) if ch.isalnum()]
    for _ in range(8):
        if not letters:
            break
        i = rng.choice(letters)
        op = rng.choice(("substitute", "delete", "double", "transpose"))
        if op == "substitute" and value[i].isascii():
            pool = string.digits if value[i].isdigit() else string.ascii_lowercase
            ch = rng.choice(pool)
            ch = ch.upper() if value[i].isupper() else ch
            out = value[:i] + ch + value[i + 1 :]
        elif op == "delete" and len(value) > 3:
            out = value[:i] + value[i + 1 :]
        elif op == "transpose" and i + 1 < len(value):
            out = value[:i] + value[i + 1] + value[i] + value[i + 2 :]
        else:
            out = value[:i] + value[i] + value[i:]
        if out != value:
            return out
    return value + rng.choice(string.ascii_lowercase)


def _wrong(field: str, truth: str | None, record: Known, data: Dataset, rng: random.Random) -> str | None:
    """A plausible but wrong value: a distractor from the email or another record's value."""
    seen = {(truth or "").casefold()}
    distractors = [d for d in record.distractors if d.casefold() not in seen]
    others = [v for v in data.other_values(field, record.lang) if v.casefold() not in seen]
    if field in ENTITY_FIELDS and distractors and (not others or rng.random() < 0.7):
        return rng.choice(distractors)
    if others:
        return rng.choice(others)
    return near_miss(truth, rng) if truth else None


def _swapped(field: str, truth: str, record: Known, data: Dataset, rng: random.Random) -> str | None:
    """startup_name <-> partner_org; the person becomes a distractor; else a wrong value."""
    other = record.labels.get(_SWAP.get(field, ""))
    if other and other != truth:
        return other
    return _wrong(field, truth, record, data, rng)


def confidence(correct: bool, rng: random.Random) -> float:
    """High for correct values, lower on average for noisy ones, with overlap."""
    if correct:
        low, high = (0.8, 0.98) if rng.random() < 0.85 else (0.5, 0.8)
    else:
        low, high = (0.35, 0.75) if rng.random() < 0.6 else (0.75, 0.95)
    return round(rng.uniform(low, high), 2)


def _labelled(field: str, record: Known, data: Dataset, profile: ProviderProfile,
              scale: float, rng: random.Random) -> tuple[Any, float]:  # fmt: skip
    truth = record.labels[field]
    kind = _draw_noise(profile.noise, scale, rng)
    value: str | None = truth
    if truth is None:
        if kind in ("wrong", "swap"):  # hallucinate a value the email does not state
            value = _wrong(field, None, record, data, rng)
    elif kind == "wrong":
        value = _wrong(field, truth, record, data, rng)
    elif kind == "near_miss":
        value = near_miss(truth, rng)
    elif kind == "drop":
        value = None
    elif kind == "swap":
        value = _swapped(field, truth, record, data, rng)
    return value, confidence(value == truth, rng)


def extract(email: str, schema: dict[str, Any], data: Dataset, profile: ProviderProfile,
            rng: random.Random, temperature: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The answer object for ``schema`` about ``email`` (labelled if known, else guessed)."""
    record = data.lookup(email)
    guesses = guess(email) if record is None else {}
    scale = noise_scale(profile, temperature)
    out: dict[str, Any] = {}
    for field, wrapped in schema_fields(schema):
        if record is not None and field in record.labels:
            value, conf = _labelled(field, record, data, profile, scale, rng)
        elif record is None and guesses.get(field) is not None:
            value, conf = guesses[field], round(rng.uniform(0.35, 0.65), 2)
        else:
            value, conf = None, round(rng.uniform(0.05, 0.3), 2)
        out[field] = {"value": value, "confidence": conf} if wrapped else value
    return out


def violate_schema(answer: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A copy of ``answer`` that fails its schema: a field missing or a confidence of 7."""
    out = dict(answer)
    if not out:
        return {"unexpected_field": True}
    field = rng.choice(sorted(out))
    if isinstance(out[field], dict) and rng.random() < 0.5:
        out[field] = {**out[field], "confidence": 7}
    else:
        del out[field]
    return out


def malformed(text: str, rng: random.Random) -> str:
    """``text`` cut off part-way, so that it is no longer valid JSON."""
    cut = max(1, int(len(text) * rng.uniform(0.3, 0.8)))
    broken = text[:cut]
    try:
        json.loads(broken)
    except ValueError:
        return broken
    return broken + ', "'
