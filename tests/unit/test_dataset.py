"""The labelled email data set: shape, label correctness and hygiene."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from importlib import resources

import pytest

from orchestration.data import FIELDS, LabelledEmail, load_emails

NAME_FIELDS = ("person_in_charge", "startup_name", "partner_org")
EMAIL_ADDRESS = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")
EXAMPLE_DOMAIN = re.compile(r"(^|\.)example\.[a-z]+$")


@pytest.fixture(scope="module")
def emails() -> list[LabelledEmail]:
    return load_emails()


def test_loads_through_load_emails_and_is_cached(emails):
    assert emails
    assert all(isinstance(e, LabelledEmail) for e in emails)
    assert load_emails() is emails


def test_file_has_one_record_per_line():
    raw = resources.files("orchestration.data").joinpath("emails.jsonl").read_text(encoding="utf-8")
    lines = [line for line in raw.splitlines() if line.strip()]
    assert len(lines) == len(load_emails())
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"id", "lang", "text", "labels", "distractors"}


def test_at_least_100_records(emails):
    assert len(emails) >= 100


def test_ids_are_unique(emails):
    counts = Counter(e.id for e in emails)
    assert [i for i, n in counts.items() if n > 1] == []


def test_both_languages_present(emails):
    langs = Counter(e.lang for e in emails)
    assert set(langs) == {"en", "ko"}
    assert langs["ko"] >= 25
    assert langs["en"] >= langs["ko"]


def test_every_label_key_present(emails):
    assert FIELDS == ("person_in_charge", "startup_name", "partner_org", "details", "date")
    for e in emails:
        assert tuple(e.labels) == FIELDS, e.id
        for value in e.labels.values():
            assert value is None or (isinstance(value, str) and value.strip()), e.id


def test_dates_are_valid_iso(emails):
    for e in emails:
        date = e.labels["date"]
        if date is not None:
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", date), (e.id, date)
            dt.date.fromisoformat(date)


def test_name_labels_appear_verbatim(emails):
    for e in emails:
        for field in NAME_FIELDS:
            value = e.labels[field]
            if value is not None:
                assert value in e.text, (e.id, field, value)


def test_details_are_short(emails):
    for e in emails:
        details = e.labels["details"]
        if details is not None:
            assert len(details.split()) <= 12, (e.id, details)


def test_distractors_are_in_text_and_not_labels(emails):
    for e in emails:
        labels = {v for v in e.labels.values() if v is not None}
        assert isinstance(e.distractors, tuple), e.id
        for name in e.distractors:
            assert name not in labels, (e.id, name)
            assert name in e.text, (e.id, name)


def test_enough_records_with_null_labels(emails):
    with_null = [e for e in emails if any(v is None for v in e.labels.values())]
    assert len(with_null) >= 20
    assert any(e.labels["date"] is None for e in emails)


def test_only_example_email_domains(emails):
    for e in emails:
        for match in EMAIL_ADDRESS.finditer(e.text):
            assert EXAMPLE_DOMAIN.search(match.group(1).lower()), (e.id, match.group(0))
