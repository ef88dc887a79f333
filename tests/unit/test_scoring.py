"""Quality scorers: each built-in, plug-in resolution and the weighted total."""

from __future__ import annotations

import math
import sys

import pytest

from orchestration.errors import InvalidRequestError
from orchestration.generation import ScorerRegistry, ScoringContext
from orchestration.generation.scoring import (
    DEFAULT_WEIGHTS,
    ResolvedScorer,
    completeness,
    consistency,
    format_sanity,
    is_refusal,
    normalise,
    register_syntax_checker,
    resolve_scorers,
    score_all,
    strip_fence,
    syntax,
)

# Works whether pytest imports this file as ``test_scoring`` or ``tests.unit.test_scoring``.
_PKG = __name__.rpartition(".")[0]
PLUGINS = f"{_PKG}.plugins_sample" if _PKG else "plugins_sample"
UNIMPORTED = f"{_PKG}.plugins_unimported" if _PKG else "plugins_unimported"


@pytest.fixture(scope="module")
def registry() -> ScorerRegistry:
    """A registry as a worker builds it from ``scorer_modules = [PLUGINS]``."""
    reg = ScorerRegistry()
    assert reg.load_modules([PLUGINS]) == [f"{PLUGINS}:mentions_task", f"{PLUGINS}:broken"]
    return reg


PY = ScoringContext(language="python")
GOOD_PY = "def add(a, b):\n    return a + b\n"


# --------------------------------------------------------------------------- fences & syntax


def test_strip_fence_removes_one_surrounding_fence_only():
    assert strip_fence("```python\nx = 1\n```") == "x = 1"
    assert strip_fence("  ```\nx = 1\n```\n") == "x = 1"
    assert strip_fence("~~~json\n{}\n~~~") == "{}"
    assert strip_fence("Here:\n```python\nx = 1\n```") == "Here:\n```python\nx = 1\n```"
    assert strip_fence("x = 1") == "x = 1"


def test_syntax_python_plain_and_fenced():
    assert syntax(GOOD_PY, PY) == 1.0
    assert syntax(f"```python\n{GOOD_PY}```", PY) == 1.0
    assert syntax("```py\nprint('hi')\n```", ScoringContext(language="py")) == 1.0


def test_syntax_broken_python_scores_zero():
    assert syntax("def add(a, b)\n    return a + b\n", PY) == 0.0
    assert syntax("if True:\nprint(1)", PY) == 0.0  # IndentationError
    assert syntax("\x00", PY) == 0.0  # source with a null byte: ValueError, not a crash
    assert syntax("Sure! Here is the code:\n```python\nx = 1\n```", PY) == 0.0


def test_syntax_json_valid_and_invalid():
    ctx = ScoringContext(language="json")
    assert syntax('{"a": [1, 2]}', ctx) == 1.0
    assert syntax('```json\n{"a": 1}\n```', ctx) == 1.0
    assert syntax("{'a': 1}", ctx) == 0.0
    assert syntax('{"a": 1,}', ctx) == 0.0
    assert syntax("[" * 100_000, ctx) == 0.0  # deep nesting: RecursionError handled


def test_syntax_blank_is_zero_and_other_languages_pass():
    assert syntax("   ", PY) == 0.0
    assert syntax("```\n\n```", ScoringContext(language="text")) == 0.0
    assert syntax("fn main() {", ScoringContext(language="rust")) == 1.0  # no checker registered
    assert syntax("anything at all", ScoringContext()) == 1.0


def test_syntax_plugin_language():
    register_syntax_checker("quorumtestlang", lambda code: code.startswith("OK"))
    ctx = ScoringContext(language="QuorumTestLang")
    assert syntax("OK fine", ctx) == 1.0
    assert syntax("```\nnope\n```", ctx) == 0.0


# --------------------------------------------------------------------------- completeness


REQS = ("Validate the email address", "Return a sorted list", "Log every retry")


def test_completeness_full_coverage():
    text = (
        "def run(addresses):\n"
        "    valid = [a for a in addresses if validate_email(a)]  # validated email addresses\n"
        "    logger.info('retry %s', n)  # logs every retry\n"
        "    return sorted(valid)  # a sorted list\n"
    )
    assert completeness(text, ScoringContext(requirements=REQS)) == pytest.approx(1.0)


def test_completeness_partial_coverage():
    text = "def validate_email(address):\n    return '@' in address\n"
    score = completeness(text, ScoringContext(requirements=REQS))
    assert 0.0 < score < 1.0
    # the first requirement is met in full, "return" only of the second, nothing of the third
    assert score == pytest.approx((1.0 + 1 / 3 + 0.0) / 3)


def test_completeness_fuzzy_and_identifier_tokens():
    ctx = ScoringContext(requirements=("handles timeouts", "parse the date"))
    assert completeness("def parseDate(s): ...  # handle timeout", ctx) == pytest.approx(1.0)


def test_completeness_edges():
    assert completeness("anything", ScoringContext()) == 1.0  # nothing required
    assert completeness("anything", ScoringContext(requirements=("it must be so",))) == 1.0  # stop words
    assert completeness("", ScoringContext(requirements=REQS)) == 0.0
    assert completeness("unrelated words only", ScoringContext(requirements=REQS)) == 0.0


# --------------------------------------------------------------------------- consistency


def test_consistency_alone_identical_and_different():
    assert consistency("hello world", ScoringContext()) == 1.0
    same = ScoringContext(others=("Hello   world", "hello world"))
    assert consistency("hello world", same) == 1.0  # prose: case and spacing ignored
    diff = ScoringContext(others=("completely unrelated text about cats",))
    assert consistency("hello world", diff) < 0.5


def test_consistency_code_is_case_sensitive_and_fence_blind():
    ctx = ScoringContext(language="python", others=("```python\nX = 1\n```",))
    assert consistency("X = 1", ctx) == 1.0
    assert consistency("x = 1", ctx) < 1.0
    assert normalise("A  B\n c", "text") == "a b c"
    assert normalise("A  B\n c", "python") == "A B c"


def test_consistency_is_the_mean_over_the_others():
    near = consistency("abcd", ScoringContext(others=("abcd", "wxyz")))
    assert near == pytest.approx(0.5)


# --------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I’m sorry — I cannot assist with this request.",
        "I can't help with writing that.",
        "As an AI language model, I do not have opinions.",
        "Unfortunately, as a large language model I won't do that.",
    ],
)
def test_format_refusal_scores_zero(text):
    assert is_refusal(text)
    assert format_sanity(text, ScoringContext()) == 0.0


def test_format_not_a_refusal():
    letter = "I'm sorry for the late reply. The invoice is attached."
    assert not is_refusal(letter)
    assert format_sanity(letter, ScoringContext()) == 1.0
    story = "x" * 400 + " and the robot said: as an AI I feel nothing."
    assert not is_refusal(story)


def test_format_empty_and_length_penalty():
    assert format_sanity("", ScoringContext()) == 0.0
    assert format_sanity(" \n\t", ScoringContext()) == 0.0
    others = ("a" * 100, "b" * 110, "c" * 90)
    assert format_sanity("d" * 100, ScoringContext(others=others)) == 1.0
    assert format_sanity("d" * 250, ScoringContext(others=others)) == 1.0  # within 3x
    long = format_sanity("d" * 5000, ScoringContext(others=others))
    short = format_sanity("d" * 5, ScoringContext(others=others))
    assert 0.0 < long < 0.2
    assert 0.0 < short < 0.2
    assert format_sanity("d" * 5000, ScoringContext()) == 1.0  # alone: no median to compare to


# --------------------------------------------------------------------------- resolution


def test_default_scorers_and_weights():
    resolved = resolve_scorers(None)
    assert [s.name for s in resolved] == list(DEFAULT_WEIGHTS)
    assert sum(s.weight for s in resolved) == pytest.approx(1.0)


def test_configured_plugin_resolves_in_both_spellings(registry: ScorerRegistry):
    for name in (f"{PLUGINS}:mentions_task", f"{PLUGINS}.mentions_task"):
        [(resolved_name, weight, fn)] = resolve_scorers({name: 2}, registry)
        assert resolved_name == name and weight == 2.0
        assert fn("Sort the list", ScoringContext(task="sort a list")) == 1.0


def test_unknown_scorer_is_invalid_request_naming_it_and_the_known_ones(registry: ScorerRegistry):
    with pytest.raises(InvalidRequestError, match="no_such_scorer") as info:
        resolve_scorers({"no_such_scorer": 1.0}, registry)
    assert "syntax, completeness, consistency, format" in str(info.value)
    assert f"{PLUGINS}:mentions_task" in str(info.value)
    for name in ("nosuchpkg.mod:fn", f"{PLUGINS}:missing", f"{PLUGINS}:unmarked", "os.path:join"):
        with pytest.raises(InvalidRequestError, match="unknown scorer"):
            resolve_scorers({name: 1.0}, registry)


def test_a_job_naming_a_module_never_imports_it(registry: ScorerRegistry):
    assert UNIMPORTED not in sys.modules
    for name in (f"{UNIMPORTED}:x", f"{UNIMPORTED}.x", "this.x"):
        with pytest.raises(InvalidRequestError, match="unknown scorer"):
            resolve_scorers({name: 1.0}, registry)
        with pytest.raises(InvalidRequestError, match="unknown scorer"):
            resolve_scorers({name: 1.0})  # the process registry too
    assert UNIMPORTED not in sys.modules
    assert "this" not in sys.modules


def test_unconfigured_plugin_is_unknown_until_its_module_is_listed():
    with pytest.raises(InvalidRequestError, match="unknown scorer"):
        resolve_scorers({f"{PLUGINS}:mentions_task": 1.0}, ScorerRegistry())


def test_scorer_module_without_marked_callables_is_a_config_error():
    with pytest.raises(ValueError, match="no callable marked"):
        ScorerRegistry().load_modules(["json"])
    with pytest.raises(ModuleNotFoundError):
        ScorerRegistry().load_modules(["no_such_quorum_module"])


def test_bad_weights():
    for weight in (-1.0, math.nan, math.inf, "1", True):
        with pytest.raises(InvalidRequestError, match="weight"):
            resolve_scorers({"syntax": weight})  # type: ignore[dict-item]
    with pytest.raises(InvalidRequestError, match="at least one"):
        resolve_scorers({"syntax": 0.0, "format": 0})
    assert [s.name for s in resolve_scorers({"syntax": 1.0, "format": 0})] == ["syntax"]


# --------------------------------------------------------------------------- score_all


def test_score_all_weights_are_normalised():
    ctx = ScoringContext(language="python")
    texts = [GOOD_PY, "def broken(:\n"]
    # syntax 1/0, format 1/1 → (3*s + 1*f) / 4
    cards = score_all(texts, ctx, resolve_scorers({"syntax": 3.0, "format": 1.0}))
    assert cards[0].total == pytest.approx(1.0)
    assert cards[1].total == pytest.approx(0.25)
    assert cards[1].breakdown == {"syntax": 0.0, "format": 1.0}
    scaled = score_all(texts, ctx, resolve_scorers({"syntax": 30.0, "format": 10.0}))
    assert [c.total for c in scaled] == [c.total for c in cards]


def test_score_all_gives_each_candidate_the_others():
    cards = score_all(
        ["same text", "same text", "other words"], ScoringContext(), resolve_scorers({"consistency": 1})
    )
    assert cards[0].total == cards[1].total > cards[2].total


def test_score_all_defaults_rank_a_good_answer_first():
    ctx = ScoringContext(requirements=("function named add", "return the sum"), language="python")
    texts = [
        GOOD_PY + "# sum of two numbers\n",
        "I'm sorry, but I can't help with that.",
        "def add(a, b) return a+b",
    ]
    cards = score_all(texts, ctx, resolve_scorers(None))
    assert max(range(3), key=lambda i: cards[i].total) == 0
    assert all(0.0 <= c.total <= 1.0 for c in cards)
    assert set(cards[0].breakdown) == set(DEFAULT_WEIGHTS)


def test_score_all_records_a_failing_or_wild_plugin(registry: ScorerRegistry):
    wild = ResolvedScorer("wild", 1.0, lambda text, ctx: 7.5)
    nan = ResolvedScorer("nan", 1.0, lambda text, ctx: math.nan)
    broken = resolve_scorers({f"{PLUGINS}:broken": 1.0}, registry)[0]
    [card] = score_all(["x"], ScoringContext(), [wild, nan, broken])
    assert card.breakdown == {"wild": 1.0, "nan": 0.0, broken.name: 0.0}
    assert "plug-in bug" in card.errors[broken.name]
    assert "nan" in card.errors
    assert card.total == pytest.approx(1 / 3)
