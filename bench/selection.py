"""Generation selectors against the emulator's defective answers: how often the chosen answer is
defect-free, versus a random pick over the same candidates' answers, and the calls and cost each
selector spends. Cheap models (openai, gemini, at several temperatures) answer; claude, given
fewer defects, judges, merges and takes escalations. "Defect-free" is the emulator's own check
(``emulator.generation.assess``: not empty, no refusal, parses, every requirement
present), so this measures selection on simulated defects, not real models.
"""

from __future__ import annotations

import random
from typing import Any

from bench.harness import Bench, quiet_profile
from bench.report import Section, cli
from bench.stats import fmt, median, pct, table
from emulator.generation import assess
from emulator.prompts import parse_generation_prompt

CHEAP_DEFECTS = {"syntax": 0.12, "missing_requirement": 0.15, "refusal": 0.04, "empty": 0.02}
STRONG_DEFECTS = {"syntax": 0.02, "missing_requirement": 0.03, "refusal": 0.0, "empty": 0.0}
CANDIDATES: list[dict[str, Any]] = [
    {"provider": "openai"},
    {"provider": "gemini"},
    {"provider": "openai", "params": {"temperature": 0.7}},
    {"provider": "gemini", "params": {"temperature": 0.7}},
    {"provider": "openai", "params": {"temperature": 1.2}},
]
STRONG = "claude"
#: Row name → the selector's own kwargs of ``quorum.generate``.
ROWS: dict[str, dict[str, Any]] = {
    "majority": {"selector": "majority"},
    "quality_weighted": {"selector": "quality_weighted"},
    "hybrid_merge": {"selector": "hybrid_merge", "aggregator": STRONG, "top_k": 3},
    "tournament": {"selector": "tournament", "judge": STRONG},
    "confidence_threshold": {"selector": "confidence_threshold", "escalate_to": STRONG},
    "early stop (qw, ≥ 0.95)": {"selector": "quality_weighted", "quality_threshold": 0.95},
}
TASKS = [
    "Write a function that merges two sorted lists",
    "Describe the configuration of a retry policy",
    "Write a parser for ISO 8601 durations",
    "Summarise the incident timeline for the on-call report",
    "Write a rate limiter using a token bucket",
    "Describe a cache invalidation plan for product pages",
]
REQUIREMENTS = [
    "reject booleans explicitly", "document overflow behaviour", "log every rejected input",
    "keep memory bounded", "expose a dry run flag", "return stable ordering",
    "mention the owning team", "cite the ticket number",
]  # fmt: skip
LANGUAGES = ["python", "json", "text"]
IN_FLIGHT = 8


def jobs(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """``n`` distinct generation tasks (prompt, 2-3 requirements, a language), reproducibly."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        reqs = rng.sample(REQUIREMENTS, rng.choice((2, 3)))
        out.append({"prompt": f"{TASKS[i % len(TASKS)]} (case {i})", "requirements": reqs,
                    "language": LANGUAGES[i % len(LANGUAGES)]})  # fmt: skip
    return out


def defect_free(text: str | None, job: dict[str, Any]) -> bool:
    """The emulator's ground truth: the answer has none of the defects it injects."""
    return text is not None and not assess(text, job["requirements"], job["language"]).problems


#: (provider, task, temperature) → the free-text answer the emulator served that call.
Served = dict[tuple[str, str, float | None], str]


def served_answers(b: Bench) -> Served:
    """Every candidate answer the emulator served so far, by provider, task and temperature; a
    later answer to the same key replaces an earlier one (each row re-asks the same tasks)."""
    served: Served = {}
    for provider in sorted({c["provider"] for c in CANDIDATES}):
        for entry in b.emulator.answers(provider):
            task = parse_generation_prompt(entry["prompt"])[0]
            served[(provider, task, entry["temperature"])] = entry["text"]
    return served


def candidate_texts(served: Served, job: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """The answers of the candidates that answered, as the emulator served them (Quorum stores
    no result per provider call; the job's result carries the candidates' scores only)."""
    texts = []
    for candidate, summary in zip(CANDIDATES, result["candidates"], strict=False):
        if summary["ok"]:
            temperature = (candidate.get("params") or {}).get("temperature")
            texts.append(served.get((candidate["provider"], job["prompt"], temperature), ""))
    return texts


def grade(served: Served, job: dict[str, Any], seconds: float, result: Any) -> dict[str, Any]:
    """One job's figures: chosen defect-free, expected random pick, best possible, calls, cost."""
    if not isinstance(result, dict):
        return {"failed": type(result).__name__, "seconds": seconds}
    texts = candidate_texts(served, job, result)
    good = [defect_free(t, job) for t in texts]
    return {
        "chosen_ok": defect_free(result["text"], job),
        "random_ok": sum(good) / len(good) if good else 0.0,
        "any_ok": any(good),
        "calls": result["calls"],
        "calls_saved": result["calls_saved"],
        "cost_usd": result["cost_usd"],
        "no_consensus": result["no_consensus"],
        "escalated": result["escalated"],
        "seconds": seconds,
    }


def summarise(graded: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over a selector's jobs (failed jobs counted apart)."""
    done = [g for g in graded if "failed" not in g]
    n = len(done) or 1

    def mean(key: str) -> float:
        return sum(float(g[key]) for g in done) / n

    return {
        "jobs": len(graded),
        "failed": len(graded) - len(done),
        "chosen_ok": mean("chosen_ok"),
        "random_ok": mean("random_ok"),
        "any_ok": mean("any_ok"),
        "calls": mean("calls"),
        "calls_saved": mean("calls_saved"),
        "cost_usd": mean("cost_usd"),
        "no_consensus": mean("no_consensus"),
        "escalated": mean("escalated"),
        "median_ms": median([g["seconds"] * 1000 for g in graded]),
    }


def run(full: bool = False) -> Section:
    """Every selector over the same tasks (small: 18 jobs each; full: 120)."""
    tasks = jobs(120 if full else 18)
    profile = quiet_profile(5.0, sigma=0.3, seed=5)
    profile["defaults"]["defects"] = CHEAP_DEFECTS
    profile["providers"] = {STRONG: {"defects": STRONG_DEFECTS}}
    figures: dict[str, dict[str, Any]] = {}
    with Bench(workers=2, pool="threads", concurrency=16, profile=profile, log_level="WARNING") as b:
        base = {"task": "quorum.generate", "candidates": CANDIDATES, "use_cache": False}
        b.run_many([{**base, **tasks[0]}] * 2)  # warm-up
        for row, extra in ROWS.items():
            kwargs = [{**base, **t, **extra} for t in tasks]
            results = b.run_many(kwargs, in_flight=IN_FLIGHT)
            served = served_answers(b)
            graded = [grade(served, t, s, r) for t, (s, r) in zip(tasks, results, strict=True)]
            figures[row] = summarise(graded)
    return _section(figures, len(tasks), full)


def _section(figures: dict[str, dict[str, Any]], n: int, full: bool) -> Section:
    heads = ["selector", "chosen defect-free", "random pick", "gain", "best possible",
             "calls / job", "saved / job", "cost / job (USD)", "no consensus", "escalated",
             "median ms", "failed"]  # fmt: skip
    rows = []
    for row, f in figures.items():
        gain = f["chosen_ok"] - f["random_ok"]
        rows.append([row, pct(f["chosen_ok"]), pct(f["random_ok"]), f"{100 * gain:+.1f} pts",
                     pct(f["any_ok"]), fmt(f["calls"], 2), fmt(f["calls_saved"], 2),
                     f"{f['cost_usd']:.6f}", pct(f["no_consensus"]), pct(f["escalated"]),
                     fmt(f["median_ms"], 0), str(f["failed"])])  # fmt: skip
    text = (
        f"{n} generation jobs per selector over the same tasks (python, json and prose, 2-3 "
        f"requirements each); {len(CANDIDATES)} candidates: {', '.join(_label(c) for c in CANDIDATES)}. "
        f"Cheap providers inject defects {CHEAP_DEFECTS} (scaled by 1 + 0.25 × temperature); "
        f"{STRONG} ({STRONG_DEFECTS}) is the judge, the aggregator and the escalation target. "
        "*Random pick* is the expected share of defect-free answers among the candidates that "
        "answered (a uniform pick); *best possible* is the share of jobs where at least one was. "
        "The emulator's aggregator returns the best candidate it is shown and its judge errs 5 % "
        "of the time. **Simulated defects and an emulated judge: these figures measure the "
        "selection machinery, not real models.**\n\n" + table(heads, rows)
    )
    data = {"jobs_per_selector": n, "candidates": CANDIDATES, "defects": CHEAP_DEFECTS,
            "strong_defects": STRONG_DEFECTS, "figures": figures, "full": full}  # fmt: skip
    return Section("selection", "Generation selectors (simulated defects)", text, data)


def _label(candidate: dict[str, Any]) -> str:
    t = (candidate.get("params") or {}).get("temperature")
    return candidate["provider"] if t is None else f"{candidate['provider']}[t={t:g}]"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    cli(run, argv)


if __name__ == "__main__":
    main()
