"""The selection benchmark grades each candidate by the answer the emulator served it."""

from __future__ import annotations

from typing import Any

from bench import selection


def _result(ok: list[bool], escalated: bool = False) -> dict[str, Any]:
    summaries = [{"ok": flag} for flag in ok]
    return {"candidates": summaries + ([{"ok": True}] if escalated else [])}


def test_candidate_texts_match_provider_task_and_temperature() -> None:
    job = {"prompt": "Write a parser (case 1)"}
    served = {
        (c["provider"], job["prompt"], (c.get("params") or {}).get("temperature")): f"answer {i}"
        for i, c in enumerate(selection.CANDIDATES)
    }
    served[("openai", "Write a parser (case 2)", None)] = "another job's answer"
    ok = [True, False, True, True, True]
    texts = selection.candidate_texts(served, job, _result(ok, escalated=True))
    assert texts == ["answer 0", "answer 2", "answer 3", "answer 4"]  # no failed one, no escalation


def test_a_candidate_the_emulator_never_served_counts_as_empty() -> None:
    texts = selection.candidate_texts({}, {"prompt": "p"}, _result([True]))
    assert texts == [""] and not selection.defect_free(texts[0], {"requirements": [], "language": "text"})
