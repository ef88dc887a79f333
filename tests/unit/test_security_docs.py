"""The operator documentation says what must never be exposed and what Quorum guarantees,
with the limits of each guarantee.

The section is drafted in ``docs/guarantees.md`` until it is merged into README.md; the check
passes when either file carries it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "README.md"]

#: (what the section must say, a pattern any wording of it matches), case-insensitive.
MUST_SAY = [
    ("Flower's API can start tasks", r"flower[\s\S]*(async-apply|start tasks|send-task)"),
    ("Flower's API can shut workers down", r"flower[\s\S]*(worker/shutdown|shut workers down)"),
    ("Flower needs authentication", r"--basic-auth|oauth"),
    ("Redis must be behind a password", r"redis[\s\S]*(requirepass|password)"),
    ("API keys stay out of Redis, logs and results", r"api keys?[\s\S]*(logs|redis)"),
    ("pickled messages are refused", r"pickle"),
    ("the guarantee: at-least-once execution", r"at-least-once"),
    ("the guarantee: exactly-once cost accounting", r"exactly-once cost"),
    ("the guarantee: typed errors", r"typed errors?"),
    ("the limits of the guarantees", r"limits?\b"),
    ("how the Redis transport's receive hole is closed", r"brpop[\s\S]*blmove"),
    ("what is left to the producer: its own timeout", r"producer's own timeout"),
    ("redelivery waits for the visibility timeout", r"visibility[_ ]timeout"),
    ("a redelivered call is billed again", r"(second|again)[\s\S]*(billed|real)"),
]


def security_section(text: str) -> str | None:
    """The body of the ``Security`` heading (any level) up to the next heading of that level."""
    match = re.search(r"^(#{1,3}) Security\b.*$", text, flags=re.MULTILINE)
    if match is None:
        return None
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} (?!#)", rest, flags=re.MULTILINE)
    return rest[: end.start()] if end else rest


def _sections() -> dict[str, str]:
    out = {}
    for path in SOURCES:
        if path.is_file() and (section := security_section(path.read_text(encoding="utf-8"))):
            out[path.name] = section
    return out


def test_a_security_section_exists() -> None:
    assert _sections(), "README.md (or docs/guarantees.md) needs a 'Security' section"


@pytest.mark.parametrize(("claim", "pattern"), MUST_SAY, ids=[c for c, _ in MUST_SAY])
def test_the_security_section_says(claim: str, pattern: str) -> None:
    sections = _sections()
    assert any(re.search(pattern, s, flags=re.IGNORECASE) for s in sections.values()), (
        f"the Security section of {sorted(sections) or 'README.md'} does not say: {claim}"
    )


def test_each_guarantee_states_its_limits() -> None:
    """Every guarantee paragraph is followed, before the next one, by what it does not cover."""
    sections = _sections()
    best = max(sections.values(), key=len, default="")
    for name in ("at-least-once", "exactly-once cost", "typed errors"):
        start = best.lower().find(name)
        assert start >= 0, name
        following = best[start : start + 3000].lower()
        assert "limit" in following, f"no limits stated for {name}"
