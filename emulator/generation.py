"""Free-text answers: generated code/JSON/prose with injected defects, judges and aggregators.

A generated answer mentions every requirement of the prompt unless the profile's defect rates
say otherwise (syntax error, a requirement missing, a refusal, an empty answer). Judge and
aggregate requests are answered by the same checks a reviewer would run (:func:`assess`).
"""

from __future__ import annotations

import ast
import json
import random
from dataclasses import dataclass, field
from typing import Any

from emulator.profile import ProviderProfile
from emulator.prompts import parse_aggregate_prompt, parse_generation_prompt, parse_judge_prompt
from orchestration.prompts import AGGREGATE_SYSTEM, JUDGE_SYSTEM

REFUSAL = "I'm sorry, but I can't help with that."
_REFUSAL_MARKERS = ("i'm sorry, but i can't", "i cannot help with", "i can't help with")


def _summary(task: str) -> str:
    line = next((ln.strip() for ln in task.splitlines() if ln.strip()), "the task")
    return line[:120]


def _python(task: str, requirements: list[str]) -> str:
    doc = _summary(task).replace("\\", "/").replace('"""', "'''")
    parts = [f'"""Solution: {doc}"""', "", "", "def solve() -> str:", '    """Entry point."""',
             f"    return {_summary(task)!r}"]  # fmt: skip
    for i, req in enumerate(requirements, start=1):
        parts += ["", "", f"def requirement_{i}() -> str:", f'    """Meets requirement {i}."""',
                  f"    # Requirement: {req}", f"    return {req!r}"]  # fmt: skip
    return "\n".join(parts) + "\n"


def _json(task: str, requirements: list[str]) -> str:
    body = {"task": _summary(task), "requirements": {req: "addressed" for req in requirements}}
    return json.dumps(body, ensure_ascii=False, indent=2)


def _prose(task: str, requirements: list[str]) -> str:
    head = f"Here is an answer to: {_summary(task)}"
    items = [f"{i}. {req}: this is addressed as asked." for i, req in enumerate(requirements, start=1)]
    return "\n\n".join([head, "\n".join(items)]) if items else head


def render(task: str, requirements: list[str], language: str | None) -> str:
    """A defect-free answer: a Python module, a JSON object or prose covering each requirement."""
    lang = (language or "").strip().lower()
    if lang in ("python", "py"):
        return _python(task, requirements)
    if lang == "json":
        return _json(task, requirements)
    return _prose(task, requirements)


def _break_syntax(answer: str, language: str | None) -> str:
    lang = (language or "").strip().lower()
    if lang in ("python", "py"):
        return answer.replace("def solve() -> str:", "def solve() -> str", 1)
    if lang == "json":
        return answer.rstrip().removesuffix("}")
    return answer.rsplit("\n", 1)[0] if "\n" in answer else answer[: len(answer) // 2]


def generate(user: str, profile: ProviderProfile, rng: random.Random, scale: float = 1.0) -> str:
    """Answer a generation prompt; inject at most one defect at the profile's (scaled) rates."""
    task, requirements, language = parse_generation_prompt(user)
    d = profile.defects
    rates = {"syntax": d.syntax, "missing_requirement": d.missing_requirement,
             "refusal": d.refusal, "empty": d.empty}  # fmt: skip
    total = sum(rates.values()) * scale
    norm = scale if total <= 1 else scale / total
    u, defect = rng.random(), None
    for kind, rate in rates.items():
        u -= rate * norm
        if u < 0:
            defect = kind
            break
    if defect == "refusal":
        return REFUSAL
    if defect == "empty":
        return ""
    if defect == "missing_requirement" and requirements:
        dropped = rng.randrange(len(requirements))
        requirements = [r for i, r in enumerate(requirements) if i != dropped]
    answer = render(task, requirements, language)
    return _break_syntax(answer, language) if defect == "syntax" else answer


@dataclass
class Assessment:
    """How good an answer is for its task: a score in [0, 1] and the problems found."""

    score: float
    problems: list[str] = field(default_factory=list)


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [str(k), *_strings(v)]]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [str(node)]


def assess(answer: str, requirements: list[str], language: str | None) -> Assessment:
    """Check emptiness, refusal, syntax (``ast``/``json``) and requirement coverage."""
    text = answer.strip()
    if not text:
        return Assessment(0.0, ["empty"])
    if any(m in text.casefold()[:200] for m in _REFUSAL_MARKERS):
        return Assessment(0.05, ["refusal"])
    lang = (language or "").strip().lower()
    score, problems, haystack = 1.0, [], text
    try:
        if lang in ("python", "py"):
            ast.parse(text)
        elif lang == "json":
            haystack = "\n".join(_strings(json.loads(text)))
    except (SyntaxError, ValueError):
        score, problems = score - 0.5, ["syntax"]
    folded = haystack.casefold()
    missing = [r for r in requirements if r.casefold() not in folded]
    if missing:
        score -= 0.4 * len(missing) / len(requirements)
        problems.append(f"missing {len(missing)} requirement(s)")
    return Assessment(round(max(score, 0.1), 4), problems)


def judge(user: str, profile: ProviderProfile, rng: random.Random) -> str:
    """``{"winner": "A"|"B", "reason": ...}`` preferring the candidate without defects."""
    parsed = parse_judge_prompt(user)
    if parsed is None:
        return json.dumps({"winner": "A", "reason": "Could not find two candidates."})
    task, a, b = parsed
    _, requirements, language = parse_generation_prompt(task)
    sa, sb = assess(a, requirements, language), assess(b, requirements, language)
    winner = ("A" if sa.score > sb.score else "B") if sa.score != sb.score else rng.choice("AB")
    if rng.random() < profile.judge_error_rate:
        winner = "B" if winner == "A" else "A"
    won, lost = (sa, sb) if winner == "A" else (sb, sa)
    reason = (
        f"Candidate {winner} has {', '.join(won.problems) or 'no defects'}; "
        f"the other has {', '.join(lost.problems) or 'no defects'}."
    )
    return json.dumps({"winner": winner, "reason": reason})


def aggregate(user: str) -> str:
    """The best candidate of an aggregate prompt by :func:`assess` (first one on ties)."""
    parsed = parse_aggregate_prompt(user)
    if parsed is None:
        return ""
    task, answers = parsed
    _, requirements, language = parse_generation_prompt(task)
    return max(answers, key=lambda ans: assess(ans, requirements, language).score)


def respond(system: str, user: str, profile: ProviderProfile, rng: random.Random,
            scale: float = 1.0) -> str:  # fmt: skip
    """Dispatch a free-text request to the judge, the aggregator or the generator."""
    if system.strip() == JUDGE_SYSTEM or parse_judge_prompt(user):
        return judge(user, profile, rng)
    if system.strip() == AGGREGATE_SYSTEM or parse_aggregate_prompt(user):
        return aggregate(user)
    return generate(user, profile, rng, scale)
