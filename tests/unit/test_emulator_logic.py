"""The emulator's answer logic in process: profiles, noise, heuristics, generation defects,
judging and fault draws (the HTTP side is covered by test_emulator_sdk.py)."""

from __future__ import annotations

import ast
import json
import random
import statistics

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from emulator import answers, generation, heuristics
from emulator.dataset import Known, build, load_dataset
from emulator.faults import pick_fault, sample_latency
from emulator.profile import ProviderProfile, load_profile, merge
from emulator.prompts import email_from_prompt
from emulator.state import EmulatorState
from orchestration.prompts import (
    AGGREGATE_SYSTEM,
    JUDGE_SYSTEM,
    aggregate_prompt,
    extraction_prompt,
    generation_prompt,
    judge_prompt,
)
from orchestration.schemas import EMAIL_ENTITIES, output_schema

SCHEMA = output_schema(EMAIL_ENTITIES)
LABELS = {
    "person_in_charge": "Maria Okafor",
    "startup_name": "Brightloop Robotics",
    "partner_org": "Northwind Ventures",
    "details": "pilot with Northwind Ventures",
    "date": "2025-03-14",
}
RECORD = Known("Hi Dana, ... Maria Okafor", LABELS, ("Dana", "Helix Capital"), "en")
OTHER = Known(
    "Another email",
    {**LABELS, "person_in_charge": "Kim Lee", "startup_name": "Orbit Labs", "date": "2025-05-01"},
    (),
    "en",
)
DATA = build([RECORD, OTHER])


def profile(**kw: object) -> ProviderProfile:
    return ProviderProfile.model_validate(kw)


def values(out: dict[str, dict[str, object]]) -> dict[str, object]:
    return {k: v["value"] for k, v in out.items()}


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


# --------------------------------------------------------------------------- profiles


def test_packaged_profiles_load_and_unnamed_providers_get_defaults() -> None:
    default, chaos = load_profile(), load_profile("chaos")
    state = EmulatorState(default)
    assert state.get("someone-else").profile.error_rate == 0.0
    assert 20 <= state.get("openai").profile.latency_median_ms <= 50
    assert EmulatorState(chaos).get("x").profile.error_rate == pytest.approx(0.3)


def test_merge_replaces_error_weights_but_merges_noise() -> None:
    base = {"errors": {"server": 1, "hang": 1}, "noise": {"wrong": 0.1, "drop": 0.1}}
    out = merge(base, {"errors": {"reset": 1}, "noise": {"drop": 0.2}})
    assert out == {"errors": {"reset": 1}, "noise": {"wrong": 0.1, "drop": 0.2}}


@pytest.mark.parametrize(
    "bad",
    [
        {"error_rate": 1.5},
        {"noise": {"wrong": 0.6, "drop": 0.6}},
        {"errors": {"teapot": 1}},
        {"latency_ms": 3},
        {"error_rate": 0.5, "errors": {"server": 0}},
    ],
)
def test_invalid_profiles_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ProviderProfile.model_validate(bad)
    with pytest.raises(ValueError):
        load_profile({"providers": {"p": bad}})


def test_runtime_overrides_merge_and_reset() -> None:
    state = EmulatorState(load_profile({"defaults": {"latency_median_ms": 5}}))
    state.configure("p", {"noise": {"drop": 0.5}})
    prof = state.configure("p", {"error_rate": 0.2, "errors": {"hang": 1}})
    assert prof.noise.drop == 0.5 and prof.errors == {"hang": 1} and prof.latency_median_ms == 5
    with pytest.raises(ValidationError):
        state.configure("p", {"error_rate": -1})
    assert state.get("p").profile.error_rate == 0.2  # a refused override changes nothing
    state.get("p").requests = 4
    state.reset()
    assert state.stats() == {} and state.get("p").profile.error_rate == 0.0


# --------------------------------------------------------------------------- faults


def test_fault_draws_follow_rate_and_weights() -> None:
    rng = random.Random(1)
    prof = profile(error_rate=0.3, errors={"server": 3, "reset": 1})
    draws = [pick_fault(prof, rng) for _ in range(4000)]
    faults = [d for d in draws if d]
    assert 0.25 < len(faults) / len(draws) < 0.35
    assert set(faults) == {"server", "reset"} and faults.count("server") > 2 * faults.count("reset")
    assert pick_fault(profile(), rng) is None


def test_latency_is_lognormal_around_the_median_and_capped() -> None:
    rng = random.Random(2)
    prof = profile(latency_median_ms=100, latency_sigma=0.5, latency_max_ms=400)
    samples = [sample_latency(prof, rng) for _ in range(2000)]
    assert 0.08 < statistics.median(samples) < 0.12 and max(samples) <= 0.4
    assert sample_latency(profile(latency_median_ms=0), rng) == 0


# --------------------------------------------------------------------------- extraction


def test_known_email_without_noise_answers_its_labels() -> None:
    out = answers.extract(RECORD.text, SCHEMA, DATA, profile(), random.Random(0))
    assert values(out) == LABELS
    Draft202012Validator(SCHEMA).validate(out)


def test_every_shipped_email_round_trips_through_the_prompt() -> None:
    data = load_dataset()
    if not data.by_text:
        pytest.skip("no labelled data set shipped")
    rng = random.Random(0)
    for record in data.by_text.values():
        email = email_from_prompt(extraction_prompt(record.text, EMAIL_ENTITIES))
        assert email is not None
        out = answers.extract(email, SCHEMA, data, profile(), rng)
        assert values(out) == {f: record.labels.get(f) for f in EMAIL_ENTITIES["properties"]}


def test_noise_kinds() -> None:
    rng = random.Random(3)
    dropped = answers.extract(RECORD.text, SCHEMA, DATA, profile(noise={"drop": 1.0}), rng)
    assert all(v is None for v in values(dropped).values())
    swapped = values(answers.extract(RECORD.text, SCHEMA, DATA, profile(noise={"swap": 1.0}), rng))
    assert (
        swapped["startup_name"] == LABELS["partner_org"] and swapped["partner_org"] == LABELS["startup_name"]
    )
    assert swapped["person_in_charge"] in ("Dana", "Helix Capital", "Kim Lee")
    for _ in range(20):
        wrong = values(answers.extract(RECORD.text, SCHEMA, DATA, profile(noise={"wrong": 1.0}), rng))
        assert wrong["person_in_charge"] in ("Dana", "Helix Capital", "Kim Lee")
        assert wrong["date"] == "2025-05-01"
        near = values(answers.extract(RECORD.text, SCHEMA, DATA, profile(noise={"near_miss": 1.0}), rng))
        for field in ("person_in_charge", "startup_name", "partner_org", "details"):
            assert edit_distance(str(near[field]), str(LABELS[field])) in (1, 2)  # transposition = 2
        assert near["date"] in ("2025-03-13", "2025-03-15")


def test_confidence_is_informative_but_overlapping() -> None:
    rng = random.Random(4)
    prof = profile(noise={"wrong": 0.15, "near_miss": 0.15, "drop": 0.1, "swap": 0.1})
    right, wrong = [], []
    for _ in range(400):
        for field, v in answers.extract(RECORD.text, SCHEMA, DATA, prof, rng).items():
            (right if v["value"] == LABELS[field] else wrong).append(v["confidence"])
    assert statistics.mean(right) > statistics.mean(wrong) + 0.1
    assert max(wrong) > min(right)  # imperfect: some noisy answers look confident


def test_temperature_raises_noise() -> None:
    prof = profile(noise={"wrong": 0.1}, temperature_noise=1.0)

    def errors(temperature: float) -> int:
        rng = random.Random(5)
        return sum(
            v["value"] != LABELS[f]
            for _ in range(300)
            for f, v in answers.extract(RECORD.text, SCHEMA, DATA, prof, rng, temperature).items()
        )

    assert errors(1.0) > errors(0.0) * 1.5


def test_unknown_text_and_unknown_fields() -> None:
    text = (
        "Dear team,\n\nWe are pleased that Blue Ocean Ventures will lead the seed round of Nimbus "
        "Labs, closing on March 14, 2025.\n\nBest regards,\nJane Doe"
    )
    schema = output_schema({"type": "object", "properties": {**EMAIL_ENTITIES["properties"], "budget": {}}})
    out = answers.extract(text, schema, DATA, profile(), random.Random(6))
    assert values(out) | {"details": None} == {
        "person_in_charge": "Jane Doe", "startup_name": "Nimbus Labs",
        "partner_org": "Blue Ocean Ventures", "details": None, "date": "2025-03-14", "budget": None,
    }  # fmt: skip
    assert all(v["confidence"] < 0.7 for v in out.values())
    assert out["budget"]["confidence"] <= 0.3
    empty = answers.extract("nothing to see", SCHEMA, DATA, profile(), random.Random(6))
    assert all(v is None for v in values(empty).values())


def test_korean_heuristics() -> None:
    text = (
        "안녕하세요,\n\n주식회사 하늘소프트와 한빛벤처스 투자 미팅을 "
        "2025년 4월 3일에 진행하려고 합니다.\n\n김민수 드림"
    )
    g = heuristics.guess(text)
    assert (g["person_in_charge"], g["startup_name"], g["partner_org"], g["date"]) == (
        "김민수", "주식회사 하늘소프트", "한빛벤처스", "2025-04-03",
    )  # fmt: skip
    assert heuristics.find_date("on 5th of June, 2024") == "2024-06-05"
    assert heuristics.find_date("2024/02/30 is not a date") is None


def test_schema_and_malformed_faults_break_the_answer() -> None:
    rng = random.Random(7)
    good = answers.extract(RECORD.text, SCHEMA, DATA, profile(), rng)
    validator = Draft202012Validator(SCHEMA)
    for _ in range(20):
        assert not validator.is_valid(answers.violate_schema(good, rng))
        with pytest.raises(ValueError):
            json.loads(answers.malformed(json.dumps(good), rng))


# --------------------------------------------------------------------------- generation

REQS = ["parse ISO dates", 'handle "quoted" \\ input', "log every failure"]


@pytest.mark.parametrize("language", ["python", "json", None])
def test_clean_generation_covers_every_requirement(language: str | None) -> None:
    prompt = generation_prompt("Write a helper.", REQS, language)
    text = generation.generate(prompt, profile(), random.Random(0))
    assert generation.assess(text, REQS, language).problems == []
    if language == "python":
        ast.parse(text)
    if language == "json":
        assert set(json.loads(text)["requirements"]) == set(REQS)


@pytest.mark.parametrize(
    ("defect", "problem"),
    [("syntax", "syntax"), ("missing_requirement", "missing 1 requirement(s)"), ("refusal", "refusal"),
     ("empty", "empty")],
)  # fmt: skip
@pytest.mark.parametrize("language", ["python", "json"])
def test_each_defect_is_detected(defect: str, problem: str, language: str) -> None:
    prompt = generation_prompt("Write a helper.", REQS, language)
    text = generation.generate(prompt, profile(defects={defect: 1.0}), random.Random(1))
    found = generation.assess(text, REQS, language)
    assert problem in found.problems and found.score < 1


def test_judge_and_aggregate_prefer_the_defect_free_answer() -> None:
    task = generation_prompt("Write a helper.", REQS, "python")
    good = generation.render("Write a helper.", REQS, "python")
    broken = good.replace("def solve() -> str:", "def solve(")
    rng = random.Random(2)
    perfect = profile(judge_error_rate=0.0)
    for a, b, winner in ((good, broken, "A"), (broken, good, "B"), (generation.REFUSAL, good, "B")):
        reply = generation.respond(JUDGE_SYSTEM, judge_prompt(task, a, b), perfect, rng)
        assert json.loads(reply)["winner"] == winner
    sloppy = profile(judge_error_rate=0.5)
    wins = [
        json.loads(generation.judge(judge_prompt(task, good, broken), sloppy, rng))["winner"]
        for _ in range(200)
    ]
    assert 40 < wins.count("B") < 160
    best = generation.respond(AGGREGATE_SYSTEM, aggregate_prompt(task, ["", broken, good]), perfect, rng)
    assert best == good
