"""The labelled emails the emulator answers from, indexed by their exact (stripped) text.

Records come from ``orchestration.data.load_emails()`` or, for tests and experiments, from a
JSONL file whose lines have ``text``, ``labels`` and optionally ``distractors``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Known:
    """One labelled email: its ground-truth labels and the other names it mentions."""

    text: str
    labels: dict[str, str | None]
    distractors: tuple[str, ...] = ()
    lang: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Labelled emails by text, plus the distinct label values per (language, field)."""

    by_text: dict[str, Known]
    #: ``(lang, field) -> values``; ``(None, field)`` holds the values of every language.
    values: dict[tuple[str | None, str], tuple[str, ...]]

    def lookup(self, text: str) -> Known | None:
        """The record whose text equals ``text`` (both stripped), or None."""
        return self.by_text.get(text.strip())

    def other_values(self, field: str, lang: str | None) -> tuple[str, ...]:
        """Label values of ``field`` in ``lang`` (all languages when it has none)."""
        return self.values.get((lang, field)) or self.values.get((None, field), ())


def build(records: list[Known]) -> Dataset:
    """Index ``records`` by stripped text and collect each field's distinct values."""
    by_text = {r.text.strip(): r for r in records}
    values: dict[tuple[str | None, str], set[str]] = {}
    for r in records:
        for key, value in r.labels.items():
            if isinstance(value, str) and value:
                values.setdefault((None, key), set()).add(value)
                if r.lang:
                    values.setdefault((r.lang, key), set()).add(value)
    return Dataset(by_text, {k: tuple(sorted(v)) for k, v in values.items()})


def _from_obj(obj: Any) -> Known:
    get = obj.get if isinstance(obj, dict) else lambda k, d=None: getattr(obj, k, d)
    labels = dict(get("labels", {}) or {})
    return Known(
        text=str(get("text")),
        labels={str(k): (None if v is None else str(v)) for k, v in labels.items()},
        distractors=tuple(str(d) for d in (get("distractors", ()) or ())),
        lang=get("lang"),
    )


def load_jsonl(path: Path) -> list[Known]:
    """Records from a JSONL file (blank lines skipped)."""
    with path.open(encoding="utf-8") as fh:
        return [_from_obj(json.loads(line)) for line in fh if line.strip()]


def load_dataset(path: Path | None = None) -> Dataset:
    """The JSONL at ``path``, else the packaged labelled emails (empty if unavailable)."""
    if path is not None:
        return build(load_jsonl(path))
    try:
        from orchestration.data import load_emails  # type: ignore[attr-defined]

        return build([_from_obj(e) for e in load_emails()])
    except (ImportError, AttributeError, OSError, ValueError) as e:
        log.warning("no labelled emails (%s): every email is answered by heuristics", e)
        return build([])
