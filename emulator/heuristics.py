"""Guesses for emails that are not in the labelled data set: dates, signers, organisations.

Deliberately simple (regular expressions): the emulator only needs plausible, low-confidence
answers for text it has never seen, and nulls when nothing matches.
"""

from __future__ import annotations

import re
from datetime import date

_MONTHS = {
    m: i
    for i, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",),
         ("jun", "june"), ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"),
         ("oct", "october"), ("nov", "november"), ("dec", "december")],
        start=1,
    )
    for m in names
}  # fmt: skip
_MONTH = (
    r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DATE_PATTERNS: list[tuple[re.Pattern[str], tuple[str, str, str]]] = [
    (re.compile(r"\b(\d{4})[-./](\d{1,2})[-./](\d{1,2})\b"), ("y", "m", "d")),
    (re.compile(r"(\d{4})\s*년\s*(\d{1,2})\s*월\s*(\d{1,2})\s*일"), ("y", "m", "d")),
    (re.compile(rf"\b{_MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.I), ("M", "d", "y")),
    (
        re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+(\d{{4}})\b", re.I),
        ("d", "M", "y"),
    ),
]
_SIGN_OFF = re.compile(
    r"^\s*(?:best(?: regards)?|kind regards|regards|warm regards|many thanks|thanks|thank you|"
    r"sincerely|cheers|best wishes|감사합니다|고맙습니다)[\s,.!]*$",
    re.I | re.M,
)
_NAME = re.compile(r"^([A-Z][a-zA-Z'-]+(?:\s+[A-Z][a-zA-Z'.-]+){1,2})\b")
_KO_NAME = re.compile(r"([가-힣]{2,4})\s*(?:드림|올림|배상)")
_ORG_SUFFIX = r"(?:Inc\.?|Ltd\.?|LLC|GmbH|Corp\.?|Ventures|Capital|Labs|Partners|Technologies)"
_ORG = re.compile(rf"\b((?:[A-Z][\w&'.-]*\s+){{1,3}}{_ORG_SUFFIX})(?![\w])")
_KO_ORG = re.compile(
    r"(주식회사\s*[가-힣A-Za-z0-9]+|[가-힣A-Za-z0-9]+\s*주식회사|\(주\)\s*[가-힣A-Za-z0-9]+|"
    r"[가-힣A-Za-z0-9]+(?:벤처스|캐피탈|파트너스|랩스))"
)
_KO_PARTICLE = re.compile(r"(?:와의|과의|에서|으로|와|과|의|은|는|이|가|을|를|에|로)$")
_INVESTOR_HINT = re.compile(r"(Ventures|Capital|Partners|투자|벤처스|캐피탈)", re.I)


def find_date(text: str) -> str | None:
    """The first recognisable full date in ``text`` as ISO ``YYYY-MM-DD``."""
    for pattern, order in _DATE_PATTERNS:
        for match in pattern.finditer(text):
            parts = dict(zip(order, match.groups(), strict=True))
            try:
                month = int(parts["m"]) if "m" in parts else _MONTHS[parts["M"].lower().rstrip(".")]
                return date(int(parts["y"]), month, int(parts["d"])).isoformat()
            except (ValueError, KeyError):
                continue
    return None


def find_signer(text: str) -> str | None:
    """A name on the line after a sign-off (or before 드림), if any."""
    for match in _SIGN_OFF.finditer(text):
        rest = text[match.end() :].lstrip("\n ")
        line = rest.split("\n", 1)[0].strip() if rest else ""
        if m := _NAME.match(line):
            return m.group(1)
        if m := re.match(r"^([가-힣]{2,4})\b", line):
            return m.group(1)
    if m := _KO_NAME.search(text):
        return m.group(1)
    return None


def find_orgs(text: str) -> list[str]:
    """Organisation names with a company suffix, in order of appearance, without duplicates."""
    found: list[tuple[int, str]] = [(m.start(), m.group(1).strip()) for m in _ORG.finditer(text)]
    found += [(m.start(), _KO_PARTICLE.sub("", m.group(1).strip())) for m in _KO_ORG.finditer(text)]
    out: list[str] = []
    for _, name in sorted(found):
        if len(name) > 2 and name not in out:
            out.append(name)
    return out


def first_sentence(text: str) -> str | None:
    """The first substantial sentence after the greeting, trimmed to 200 characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in lines[1:] or lines:
        if len(line) >= 25:
            sentence = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0]
            return sentence[:200]
    return None


def guess(text: str) -> dict[str, str | None]:
    """Best guesses for the built-in email fields (None where nothing was found)."""
    orgs = find_orgs(text)
    investors = [o for o in orgs if _INVESTOR_HINT.search(o)]
    others = [o for o in orgs if o not in investors]
    startup = others[0] if others else None
    partner = investors[0] if investors else (others[1] if len(others) > 1 else None)
    return {
        "person_in_charge": find_signer(text),
        "startup_name": startup,
        "partner_org": partner,
        "details": first_sentence(text),
        "date": find_date(text),
    }
