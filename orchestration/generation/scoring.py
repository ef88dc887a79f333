"""Quality scorers for generation jobs: pure functions ``(text, ctx) -> [0, 1]``, pluggable.

Built-ins (default weights in :data:`DEFAULT_WEIGHTS`): ``syntax`` (python/json parse after
stripping one surrounding Markdown fence; more languages via :func:`register_syntax_checker` or
entry-point group ``quorum.syntax``), ``completeness`` (coverage of the requirements' key terms),
``consistency`` (mean similarity to the other candidates: self-consistency / MBR) and ``format``
(empty or refusal → 0; absurd length vs the candidates' median → penalty).

Plug-ins come from the operator, never from a job: entry points in ``quorum.scorers`` and the
callables marked with :func:`scorer` in the modules listed under ``[orchestration]
scorer_modules`` (imported once at worker start). A job names one of those or is refused;
nothing is imported because a job asked.
"""

from __future__ import annotations

import ast
import bisect
import importlib
import json
import math
import re
import statistics
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from importlib.metadata import entry_points
from typing import NamedTuple, Protocol, TypeVar

from rapidfuzz import fuzz, process
from rapidfuzz.distance import Indel

from orchestration.errors import InvalidRequestError

#: Weights used when a job names no scorers (they sum to 1).
DEFAULT_WEIGHTS: dict[str, float] = {"syntax": 0.35, "completeness": 0.35, "consistency": 0.2, "format": 0.1}
_SCORER_GROUP = "quorum.scorers"
_SYNTAX_GROUP = "quorum.syntax"
#: Languages compared as prose (casefolded); every other language is code (case matters).
_PROSE_LANGUAGES = frozenset({"text", "plain", "plaintext", "prose", "markdown", "md"})
_LANGUAGE_ALIASES = {"py": "python", "python3": "python", "jsonc": "json"}
#: rapidfuzz ratio (0..100) at which a requirement term matches a text token.
_FUZZY_CUTOFF = 85.0
#: Length ratio to the median beyond which ``format`` starts to penalise (either direction).
_LENGTH_TOLERANCE = 3.0
#: Longer (normalised) answers are compared on this prefix: Indel cost grows with len(a) * len(b).
_SIMILARITY_MAX_CHARS = 10_000
#: Refusals are looked for in the opening of the answer only (a story may quote "as an AI").
_REFUSAL_HEAD_CHARS = 300

_STOP_WORDS = frozenset(
    """a about above after all also an and any are as at be been being both but by can could do
    does each either ensure every for from has have how i if in include includes including into
    is it its itself just make may might more most must need needs no nor not of on only or other
    our out over please same shall should so some such sure than that the their them then there
    these they this those through to too under up use used uses using very via was we were what
    when where which while who whom why will with within without would you your""".split()  # noqa: SIM905
)
_FENCE_RE = re.compile(r"\A\s*(`{3,}|~{3,})[^\n`]*\n(.*?)\n?\s*\1\s*\Z", re.DOTALL)
_WORD_RE = re.compile(r"\w+")
_CAMEL_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_REFUSAL_RES = tuple(
    re.compile(p)
    for p in (
        r"\b(?:i'm|i am) sorry\b[^.!?\n]{0,60}\b(?:can't|cannot|can not|unable|won't|not able)\b",
        r"\bi (?:can't|cannot|can not|won't|am unable to|'m unable to|am not able to) "
        r"(?:help|assist|comply|provide|fulfil|do that|write that|create that)",
        r"\bas an ai\b",
        r"\bas a (?:large )?language model\b",
    )
)


@dataclass(frozen=True, slots=True)
class ScoringContext:
    """What a scorer may see besides the text: task, requirements, language, the other answers
    and a per-job memo (similarities) that ``score_all`` shares between the candidates."""

    task: str = ""
    requirements: tuple[str, ...] = ()
    language: str | None = None
    others: tuple[str, ...] = ()
    memo: dict[tuple[str, str], float] = field(default_factory=dict, compare=False, repr=False)


class Scorer(Protocol):
    """A quality scorer: ``(text, ctx) -> float`` in [0, 1] (values outside are clamped)."""

    def __call__(self, text: str, ctx: ScoringContext) -> float: ...


class ResolvedScorer(NamedTuple):
    """A scorer a job asked for, with its (positive) weight."""

    name: str
    weight: float
    fn: Scorer


@dataclass(frozen=True, slots=True)
class ScoreCard:
    """One candidate's weighted score, its per-scorer breakdown and any scorer failures."""

    total: float
    breakdown: dict[str, float]
    errors: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- text helpers


def _canonical_language(language: str | None) -> str | None:
    """Lower-cased language name with common aliases folded (``py`` → ``python``)."""
    lang = (language or "").strip().lower()
    return _LANGUAGE_ALIASES.get(lang, lang) or None


def strip_fence(text: str) -> str:
    """The body of one Markdown code fence surrounding the whole text, else the text unchanged."""
    m = _FENCE_RE.match(text)
    return m.group(2) if m else text


def normalise(text: str, language: str | None = None) -> str:
    """Comparable form: fence stripped, whitespace collapsed, casefolded for prose (not code)."""
    body = " ".join(strip_fence(text).split())
    lang = _canonical_language(language)
    return body.casefold() if lang is None or lang in _PROSE_LANGUAGES else body


def similarity(a: str, b: str, memo: dict[tuple[str, str], float] | None = None) -> float:
    """Normalised Indel similarity in [0, 1] of two normalised texts (symmetric, memoised if asked)."""
    if a == b:
        return 1.0
    a, b = a[:_SIMILARITY_MAX_CHARS], b[:_SIMILARITY_MAX_CHARS]
    key = (a, b) if a <= b else (b, a)
    if memo is None:
        return float(Indel.normalized_similarity(*key))
    if key not in memo:
        memo[key] = float(Indel.normalized_similarity(*key))
    return memo[key]


def _clean(text: str) -> str:
    """NFKC with typographic apostrophes folded, so "I’m" matches "I'm"."""
    return unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")


def _key_terms(text: str) -> list[str]:
    """Distinct casefolded words of ``text`` minus stop words and one-letter tokens, in order."""
    seen: dict[str, None] = {}
    for word in _WORD_RE.findall(_clean(text).casefold()):
        if len(word) > 1 and word not in _STOP_WORDS:
            seen.setdefault(word, None)
    return list(seen)


def _text_tokens(text: str) -> set[str]:
    """Casefolded tokens of ``text``, identifiers also split on ``_`` and camelCase."""
    out: set[str] = set()
    for word in _WORD_RE.findall(_clean(text)):
        out.add(word.casefold())
        for part in word.split("_"):
            out.update(p.casefold() for p in _CAMEL_RE.findall(part))
    return out


def _term_found(term: str, tokens: set[str], ordered: list[str]) -> bool:
    """Exact, prefix (either way) or fuzzy (rapidfuzz ratio ≥ _FUZZY_CUTOFF) match of one term."""
    if term in tokens:
        return True
    i = bisect.bisect_left(ordered, term)  # a token extends the term: sort → sorted, log → logs
    if len(term) >= 3 and i < len(ordered) and ordered[i].startswith(term):
        return True
    if len(term) <= 3:  # short terms fuzz-match far too much
        return False
    if any(term[:n] in tokens for n in range(4, len(term))):  # the term extends a token
        return True
    return process.extractOne(term, ordered, scorer=fuzz.ratio, score_cutoff=_FUZZY_CUTOFF) is not None


# --------------------------------------------------------------------------- syntax registry

SyntaxChecker = Callable[[str], float | bool]
_SYNTAX: dict[str, SyntaxChecker] = {}
_NO_SYNTAX: set[str] = set()  # languages without a checker (entry points already searched)


def register_syntax_checker(language: str, checker: SyntaxChecker) -> None:
    """Plug in a syntax check ``(code) -> bool | float`` for ``language`` (replaces any other)."""
    lang = _canonical_language(language)
    if not lang:
        raise ValueError("language is empty")
    _SYNTAX[lang] = checker
    _NO_SYNTAX.discard(lang)


def _parses(parse: Callable[[str], object], code: str) -> bool:
    """Whether ``parse`` accepts ``code`` (deep nesting and null bytes count as failures)."""
    try:
        parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


register_syntax_checker("python", partial(_parses, ast.parse))
register_syntax_checker("json", partial(_parses, json.loads))


def _syntax_checker(language: str | None) -> SyntaxChecker | None:
    """The checker for ``language``: registered, else an entry point in ``quorum.syntax``, else None."""
    lang = _canonical_language(language)
    if not lang or lang in _PROSE_LANGUAGES:
        return None
    if lang not in _SYNTAX and lang not in _NO_SYNTAX:
        for ep in entry_points(group=_SYNTAX_GROUP).select(name=lang):
            _SYNTAX[lang] = ep.load()
            break
        else:
            if len(_NO_SYNTAX) < 1024:  # the language comes from jobs: keep the memo bounded
                _NO_SYNTAX.add(lang)
    return _SYNTAX.get(lang)


# --------------------------------------------------------------------------- built-in scorers


def syntax(text: str, ctx: ScoringContext) -> float:
    """1.0 when the (unfenced) text parses in the job's language, 0.0 when it does not or is blank."""
    body = strip_fence(text)
    if not body.strip():
        return 0.0
    checker = _syntax_checker(ctx.language)
    return 1.0 if checker is None else float(checker(body))


def completeness(text: str, ctx: ScoringContext) -> float:
    """Mean share of each requirement's key terms found in the text (1.0 without requirements)."""
    terms_per_req = [t for t in (_key_terms(r) for r in ctx.requirements) if t]
    if not terms_per_req:
        return 1.0
    tokens = _text_tokens(text)
    if not tokens:
        return 0.0
    ordered = sorted(tokens)
    found: dict[str, bool] = {}
    shares = []
    for terms in terms_per_req:
        hits = sum(found.setdefault(t, _term_found(t, tokens, ordered)) for t in terms)
        shares.append(hits / len(terms))
    return sum(shares) / len(shares)


def consistency(text: str, ctx: ScoringContext) -> float:
    """Mean similarity to the other candidates' answers; 1.0 when it is the only one."""
    if not ctx.others:
        return 1.0
    mine = normalise(text, ctx.language)
    sims = [similarity(mine, normalise(o, ctx.language), ctx.memo) for o in ctx.others]
    return sum(sims) / len(sims)


def is_refusal(text: str) -> bool:
    """Whether the answer opens like a refusal ("I'm sorry, but I can't…", "As an AI…")."""
    head = _clean(text[:_REFUSAL_HEAD_CHARS]).casefold()
    return any(r.search(head) for r in _REFUSAL_RES)


def format_sanity(text: str, ctx: ScoringContext) -> float:
    """0 for empty or refusing answers; scaled down beyond 3x (or 1/3) the candidates' median length."""
    if not text.strip() or is_refusal(text):
        return 0.0
    lengths = [len(t.strip()) for t in (text, *ctx.others) if t.strip()]
    if len(lengths) < 2:
        return 1.0
    ratio = len(text.strip()) / statistics.median(lengths)
    return min(1.0, _LENGTH_TOLERANCE / max(ratio, 1.0 / ratio))


BUILTIN_SCORERS: dict[str, Scorer] = dict(
    syntax=syntax, completeness=completeness, consistency=consistency, format=format_sanity
)


_F = TypeVar("_F", bound=Callable[..., float])


def scorer(fn: _F) -> _F:
    """Mark a callable as a scorer, so that listing its module in ``scorer_modules`` offers it."""
    fn.__quorum_scorer__ = True  # type: ignore[attr-defined]
    return fn


@dataclass
class ScorerRegistry:
    """The scorers jobs may name: the built-ins, entry points in ``quorum.scorers`` and the marked
    callables of operator-listed modules (named ``module:function`` or ``module.function``)."""

    plugins: dict[str, Scorer] = field(default_factory=dict)

    def load_modules(self, modules: Sequence[str]) -> list[str]:
        """Import the operator's scorer modules (worker start) and register their marked callables.

        Errors propagate: a misconfigured worker should not start. Returns the names registered.
        """
        names = []
        for module in modules:
            found = {
                attr: obj
                for attr, obj in vars(importlib.import_module(module)).items()
                if callable(obj) and getattr(obj, "__quorum_scorer__", False)
            }
            if not found:
                raise ValueError(f"scorer module {module!r} has no callable marked with @scorer")
            for attr, obj in found.items():
                self.plugins[f"{module}:{attr}"] = self.plugins[f"{module}.{attr}"] = obj
                names.append(f"{module}:{attr}")
        return names

    def known(self) -> list[str]:
        """Every name a job may use (plug-ins in their ``module:function`` spelling)."""
        entry = sorted(ep.name for ep in entry_points(group=_SCORER_GROUP))
        return [*BUILTIN_SCORERS, *sorted(n for n in self.plugins if ":" in n), *entry]

    def resolve(self, name: str) -> Scorer:
        """A scorer by built-in name, registered plug-in or entry point; else InvalidRequestError."""
        fn = BUILTIN_SCORERS.get(name) or self.plugins.get(name) or _from_entry_point(name)
        if fn is None:
            known = self.known()
            shown = ", ".join(known[:40]) + (f" (+{len(known) - 40} more)" if len(known) > 40 else "")
            raise InvalidRequestError(
                f"unknown scorer {name[:100]!r}; known scorers: {shown} (plug-ins are registered "
                f"by the operator: entry points in {_SCORER_GROUP!r} or [orchestration] scorer_modules)",
                field="scorers",
                scorer=name[:100],
            )
        return fn


def _from_entry_point(name: str) -> Scorer | None:
    """The scorer an installed distribution registers under ``name`` in ``quorum.scorers``."""
    eps = entry_points(group=_SCORER_GROUP).select(name=name)
    try:
        return next((ep.load() for ep in eps), None)
    except Exception as e:  # an installed but broken plug-in: say so rather than "unknown"
        raise InvalidRequestError(
            f"scorer {name!r}: loading entry point failed: {e}", field="scorers"
        ) from None


#: This process's registry; workers fill it from the config at start (:meth:`load_modules`).
SCORERS = ScorerRegistry()


def resolve_scorers(
    spec: Mapping[str, float] | None, registry: ScorerRegistry = SCORERS
) -> list[ResolvedScorer]:
    """The job's scorers with weights (None → :data:`DEFAULT_WEIGHTS`); zero weights are dropped."""
    spec = DEFAULT_WEIGHTS if spec is None else spec
    out = []
    for name, weight in spec.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < math.inf:
            raise InvalidRequestError(
                f"scorer {name[:100]!r}: weight {weight!r} must be ≥ 0", field="scorers"
            )
        fn = registry.resolve(name)
        if weight > 0:
            out.append(ResolvedScorer(name, float(weight), fn))
    if not out:
        raise InvalidRequestError("scorers: at least one weight must be > 0", field="scorers")
    return out


def _run(sc: ResolvedScorer, text: str, ctx: ScoringContext) -> tuple[float, str | None]:
    """One scorer's value clamped to [0, 1]; a failing plug-in scores 0 and says why."""
    try:
        value = sc.fn(text, ctx)
    except Exception as e:  # a buggy plug-in must not fail the job
        return 0.0, f"{type(e).__name__}: {e}"
    if not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0, f"returned {value!r}, not a finite number"
    return min(1.0, max(0.0, float(value))), None


def score_all(
    texts: Sequence[str], ctx: ScoringContext, scorers: Sequence[ResolvedScorer]
) -> list[ScoreCard]:
    """Score every answer (each sees the others in ``ctx.others``); total = weighted mean."""
    total_weight = sum(s.weight for s in scorers)
    if total_weight <= 0:
        raise ValueError("scorers carry no weight")
    cards = []
    memo: dict[tuple[str, str], float] = {}
    for i, text in enumerate(texts):
        own = replace(ctx, others=tuple(texts[:i]) + tuple(texts[i + 1 :]), memo=memo)
        breakdown: dict[str, float] = {}
        errors: dict[str, str] = {}
        for sc in scorers:
            value, err = _run(sc, text, own)
            breakdown[sc.name] = value
            if err is not None:
                errors[sc.name] = err
        total = sum(breakdown[s.name] * s.weight for s in scorers) / total_weight
        cards.append(ScoreCard(round(total, 6), breakdown, errors))
    return cards
