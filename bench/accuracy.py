"""Merge accuracy on the labelled emails through the emulator's noisy providers: each single
provider, consensus and best-match, per field and whole record. The noise is the emulator's
(independent per provider and field), so this measures the merge, not real models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.harness import THREE, Bench, quiet_profile
from bench.report import Section, cli
from bench.stats import pct, table, verdict
from orchestration.data import FIELDS, load_emails
from orchestration.data import LabelledEmail as Email
from orchestration.extraction import normalize_value

MODERATE = {"wrong": 0.08, "near_miss": 0.08, "drop": 0.05, "swap": 0.04}
#: ×5 would put more than 100 % of answers in noise; ×3.6 leaves 10 % of fields right.
BAD_FACTOR = 3.6
BAD = {k: round(v * BAD_FACTOR, 3) for k, v in MODERATE.items()}
SCENARIOS: dict[str, dict[str, dict[str, float]]] = {
    "a": {p: MODERATE for p in THREE},
    "b": {"claude": MODERATE, "openai": MODERATE, "gemini": BAD},
}
ROWS = [*THREE, "consensus", "best_match"]
IN_FLIGHT = 8
Answer = dict[str, Any] | None  # field -> value, None when the answer is missing


def correct(field: str, got: Any, label: Any) -> bool:
    """The comparison the brief asks for: equal normalised keys."""
    return normalize_value(field, got) == normalize_value(field, label)


def _values(fields: dict[str, Any]) -> dict[str, Any]:
    return {f: (v or {}).get("value") for f, v in fields.items()}


def _answers(result: Any) -> dict[str, Answer]:
    """Per row: the field values a consensus or best-match result (or its attempts) gave."""
    if not isinstance(result, dict):
        return {}
    out: dict[str, Answer] = {result["strategy"]: _values(result["fields"])}
    for a in result.get("attempts", []):
        out[a["provider"]] = _values(a["result"]["fields"]) if a["ok"] and a.get("result") else None
    return out


def score(answers: list[tuple[Email, dict[str, Answer]]]) -> dict[str, dict[str, float]]:
    """Per row: accuracy per field, the mean over fields and the whole-record accuracy."""
    out: dict[str, dict[str, float]] = {}
    for row in ROWS:
        graded = [(e, a.get(row)) for e, a in answers if row in a]
        if not graded:
            continue
        hits: dict[str, int] = dict.fromkeys(FIELDS, 0)
        whole = 0
        for email, ans in graded:
            ok = {f: ans is not None and correct(f, ans.get(f), email.labels[f]) for f in FIELDS}
            whole += all(ok.values())
            for f in FIELDS:
                hits[f] += ok[f]
        n = len(graded)
        out[row] = {f: hits[f] / n for f in FIELDS}
        out[row]["field_mean"] = sum(hits.values()) / (n * len(FIELDS))
        out[row]["record"] = whole / n
        out[row]["n"] = n
    return out


def _pass(b: Bench, emails: list[Email], strategy: str) -> list[tuple[Email, dict[str, Answer]]]:
    jobs = [{"text": e.text, "strategy": strategy, "providers": THREE, "use_cache": False,
             "early_quorum": False} for e in emails]  # fmt: skip
    results = b.run_many(jobs, in_flight=IN_FLIGHT)
    return [(e, _answers(r)) for e, (_, r) in zip(emails, results, strict=True)]


def _merge(*parts: list[tuple[Email, dict[str, Answer]]]) -> list[tuple[Email, dict[str, Answer]]]:
    """Consensus rows (with the single providers from its attempts) plus best-match rows."""
    merged = [(e, dict(a)) for e, a in parts[0]]
    for extra in parts[1:]:
        for (_, a), (_, x) in zip(merged, extra, strict=True):
            a.update({k: v for k, v in x.items() if k in ("best_match",)})
    return merged


def run(full: bool = False) -> Section:
    """Both scenarios: a cold pass (accuracy counts start empty) and a warm pass for consensus."""
    emails = list(load_emails()) * (3 if full else 1)
    figures: dict[str, dict[str, Any]] = {}
    with Bench(workers=2, pool="threads", concurrency=16, profile=quiet_profile(0.0, seed=3)) as b:
        warm_up = {"text": emails[0].text, "strategy": "consensus", "providers": THREE, "use_cache": False}
        b.run_many([warm_up] * 4)
        for name, noise in SCENARIOS.items():
            for p, rates in noise.items():
                b.emulator.configure(p, noise=rates)
            b.reset_state()  # empty accuracy counts
            cold = _pass(b, emails, "consensus")
            best = _pass(b, emails, "best_match")
            warm = _pass(b, emails, "consensus")
            figures[name] = {"cold": score(_merge(cold, best)), "warm": score(_merge(warm, best))}
    return _section(figures, len(emails), full)


def _rows(fig: dict[str, dict[str, float]]) -> list[list[str]]:
    return [[r, *(pct(fig[r][f]) for f in (*FIELDS, "field_mean", "record"))] for r in ROWS if r in fig]


def _check(fig: dict[str, dict[str, float]], test: Callable[[float, float], bool]) -> dict[str, Any]:
    """Consensus vs the best single provider on the field mean and the whole record."""
    out: dict[str, Any] = {}
    for metric in ("field_mean", "record"):
        best = max(fig[p][metric] for p in THREE)
        cons = fig["consensus"][metric]
        gain = cons / best - 1 if best else float("nan")
        out[metric] = {"best_single": best, "consensus": cons, "gain": gain, "met": test(cons, best)}
    return out


def _section(figures: dict[str, dict[str, Any]], n: int, full: bool) -> Section:
    heads = ["answer", *FIELDS, "field mean", "whole record"]
    tests = {"a": lambda c, s: c >= 1.10 * s, "b": lambda c, s: c >= s}
    goals = {"a": "consensus ≥ 1.10 × best single", "b": "consensus ≥ best single"}
    parts = [
        "Emulator noise per provider and field (independent draws): "
        f"scenario **a** all three {MODERATE}; scenario **b** claude and openai the same, gemini "
        f"×{BAD_FACTOR} {BAD}. No faults, `use_cache: false`, `early_quorum: false` (every answer "
        f"in). {n} jobs per pass ({len(load_emails())} labelled emails). Single-provider rows are the "
        "answers inside the consensus jobs; best-match ran its own jobs, once per scenario (it does "
        "not use the accuracy counts, so its row repeats in the warm table). A value is right when "
        "`normalize_value(field, got) == normalize_value(field, label)`. **These figures measure the "
        "merge on simulated noise, not real models.**\n"
    ]
    checks: dict[str, Any] = {}
    for name, fig in figures.items():
        for phase, label in (("cold", "cold accuracy counts"), ("warm", "warm counts (second pass)")):
            c = _check(fig[phase], tests[name])
            checks[f"{name}_{phase}"] = c
            parts.append(f"### Scenario {name}, {label}\n\n{table(heads, _rows(fig[phase]))}\n")
            parts.append(
                f"Target ({goals[name]}): field mean {pct(c['field_mean']['consensus'])} vs "
                f"{pct(c['field_mean']['best_single'])} ({c['field_mean']['gain']:+.1%}) → "
                f"{verdict(c['field_mean']['met'])}; whole record {pct(c['record']['consensus'])} vs "
                f"{pct(c['record']['best_single'])} ({c['record']['gain']:+.1%}) → "
                f"{verdict(c['record']['met'])}.\n"
            )
    data = {"noise": {"a": SCENARIOS["a"], "b": SCENARIOS["b"]}, "jobs_per_pass": n,
            "figures": figures, "checks": checks, "full": full}  # fmt: skip
    return Section("accuracy", "Accuracy of the merge (simulated noise)", "\n".join(parts), data)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    cli(run, argv)


if __name__ == "__main__":
    main()
