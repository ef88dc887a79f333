"""The emulator's inverse of :mod:`orchestration.prompts`: it reads back the email, the task, its
requirements and the candidate answers from the prompts the domain sends, to answer like a model."""

from __future__ import annotations

from orchestration.prompts import EMAIL_CLOSE, EMAIL_OPEN


def email_from_prompt(prompt: str) -> str | None:
    """The email inside an :func:`~orchestration.prompts.extraction_prompt` (None if absent)."""
    start = prompt.find(EMAIL_OPEN + "\n")
    end = prompt.rfind("\n" + EMAIL_CLOSE)
    if start < 0 or end < start:
        return None
    return prompt[start + len(EMAIL_OPEN) + 1 : end]


def parse_generation_prompt(text: str) -> tuple[str, list[str], str | None]:
    """Inverse of :func:`~orchestration.prompts.generation_prompt`: task, requirements, language."""
    language = None
    requirements: list[str] = []
    task_parts = []
    for block in text.split("\n\n"):
        if block.startswith("Requirements:\n"):
            requirements = [line[2:].strip() for line in block.splitlines()[1:] if line.startswith("- ")]
        elif block.startswith("Language: ") and "\n" not in block:
            language = block[len("Language: ") :].strip() or None
        else:
            task_parts.append(block)
    return "\n\n".join(task_parts), requirements, language


def _between(text: str, tag: str) -> list[str]:
    out, pos = [], 0
    open_, close = f"<{tag}>\n", f"\n</{tag}>"
    while (start := text.find(open_, pos)) >= 0:
        end = text.find(close, start + len(open_))
        if end < 0:
            break
        out.append(text[start + len(open_) : end])
        pos = end + len(close)
    return out


def parse_judge_prompt(text: str) -> tuple[str, str, str] | None:
    """Task, answer A and answer B of a :func:`~orchestration.prompts.judge_prompt` (else None)."""
    task, a, b = _between(text, "task"), _between(text, "candidate_a"), _between(text, "candidate_b")
    return (task[0], a[0], b[0]) if task and a and b else None


def parse_aggregate_prompt(text: str) -> tuple[str, list[str]] | None:
    """Task and candidates of an :func:`~orchestration.prompts.aggregate_prompt` (else None)."""
    task, answers = _between(text, "task"), _between(text, "candidate")
    return (task[0], answers) if task and answers else None
