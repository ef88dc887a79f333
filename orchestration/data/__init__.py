"""The labelled email data set shipped with the package (``emails.jsonl``), for benchmarks and tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

# Label conventions: ``person_in_charge`` is the person responsible on the startup's side, ``date`` is
# the key date of the matter as ``YYYY-MM-DD``, and a label is ``None`` when the email does not say.

#: The five ``email_entities`` fields, in schema order.
FIELDS: tuple[str, ...] = ("person_in_charge", "startup_name", "partner_org", "details", "date")
#: Languages present in the data set.
LANGS: tuple[str, ...] = ("en", "ko")

_RESOURCE = "emails.jsonl"


@dataclass(frozen=True, slots=True)
class LabelledEmail:
    """One email with its expected labels and the names that appear in it but are not answers."""

    id: str
    lang: str
    text: str
    labels: dict[str, str | None]
    distractors: tuple[str, ...] = ()


def _parse(raw: dict[str, Any], where: str) -> LabelledEmail:
    """Build a :class:`LabelledEmail` from one decoded JSON line, or raise ``ValueError``."""
    labels = raw.get("labels")
    if not isinstance(labels, dict) or set(labels) != set(FIELDS):
        raise ValueError(f"{where}: labels must have exactly the keys {FIELDS}")
    if raw.get("lang") not in LANGS:
        raise ValueError(f"{where}: lang must be one of {LANGS}")
    return LabelledEmail(
        id=str(raw["id"]),
        lang=str(raw["lang"]),
        text=str(raw["text"]),
        labels={field: labels[field] for field in FIELDS},
        distractors=tuple(raw.get("distractors") or ()),
    )


@cache
def load_emails() -> list[LabelledEmail]:
    """Every labelled email in file order (cached: treat the returned list as read-only)."""
    source = resources.files(__package__).joinpath(_RESOURCE).read_text(encoding="utf-8")
    emails = []
    for number, line in enumerate(source.splitlines(), start=1):
        if line.strip():
            emails.append(_parse(json.loads(line), f"{_RESOURCE}:{number}"))
    return emails
