"""The provider contract: every adapter (anthropic, openai, gemini, openai_compatible), through
its real SDK over HTTP against the emulator, behaves the same way — answers, usage, mapped
errors, the timeout, one HTTP request per call, and no key in any error."""

from __future__ import annotations

import json
import pickle
import time
import traceback
from typing import Any

import pytest
from pydantic import ValidationError

from orchestration.errors import (
    AuthError,
    BadRequestError,
    InvalidOutputError,
    InvalidRequestError,
    OverloadedError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
    error_from_dict,
)
from orchestration.models import MAX_TEXT_CHARS, SamplingParams
from orchestration.providers import Provider
from orchestration.schemas import EMAIL_ENTITIES

from .support import FAKE_KEY, make_provider

SAMPLE_EMAIL = (
    "Hi Dana,\n\nFollowing our call, Brightloop Robotics would like to go ahead with the pilot "
    "with Northwind Ventures. Maria Okafor will lead it on our side; we propose to sign the "
    "term sheet on 2025-03-14.\n\nBest,\nMaria Okafor\nCEO, Brightloop Robotics"
)


def labelled_emails() -> list[Any]:
    """The first English and first Korean labelled email (a literal sample if none ship)."""
    try:
        from orchestration.data import load_emails
    except ImportError:
        return []
    picked: dict[str, Any] = {}
    for email in load_emails():
        picked.setdefault(email.lang, email)
    return list(picked.values())


def labelled_email() -> str:
    """The text of the first labelled email."""
    emails = labelled_emails()
    return str(emails[0].text) if emails else SAMPLE_EMAIL


def extract(provider: Provider, **kw: Any) -> Any:
    """One extraction of the built-in schema with default parameters."""
    return provider.extract(labelled_email(), EMAIL_ENTITIES, SamplingParams(), **kw)


def assert_no_key(e: BaseException) -> None:
    """The fake key (or a recognisable piece of it) appears nowhere an operator could see it."""
    seen = [str(e), repr(e), json.dumps(getattr(e, "details", {}), default=str), repr(e.args)]
    seen.append("".join(traceback.format_exception(e)))
    for text in seen:
        assert FAKE_KEY not in text
        assert "SECRET-1234567890" not in text


def assert_portable(e: ProviderError) -> None:
    """The error survives pickle and its JSON form (``to_dict``, what results carry) unchanged."""
    for back in (pickle.loads(pickle.dumps(e)), error_from_dict(json.loads(json.dumps(e.to_dict())))):
        assert type(back) is type(e)
        assert str(back) == str(e) and back.details == e.details


# --------------------------------------------------------------------------- success


def test_extract_success(emulator: Any, provider: Provider, name: str) -> None:
    result = extract(provider)
    assert set(result.fields) == set(EMAIL_ENTITIES["properties"])
    for field in result.fields.values():
        assert 0.0 <= field.confidence <= 1.0
    assert result.provider == name
    assert result.model
    assert result.tokens_in > 0 and result.tokens_out > 0
    assert result.latency_ms > 0
    assert emulator.requests(name) == 1


@pytest.mark.parametrize("email", labelled_emails(), ids=lambda e: f"{e.lang}-{e.id}")
def test_extract_reads_the_email_through_the_wire(
    emulator: Any, provider: Provider, name: str, email: Any
) -> None:
    """With the emulator's noise off its answer is the label: the email (also non-ASCII) arrived
    intact inside the prompt, and the structured answer came back intact through the SDK."""
    result = provider.extract(email.text, EMAIL_ENTITIES, SamplingParams())
    assert {k: v.value for k, v in result.fields.items()} == email.labels


def test_generate_returns_text_and_usage(emulator: Any, provider: Provider, name: str) -> None:
    result = provider.generate("Write a Python function add(a, b) that returns the sum.", SamplingParams())
    assert isinstance(result.text, str) and result.text.strip()
    assert result.tokens_in > 0 and result.tokens_out > 0
    assert result.fields == {}
    assert emulator.requests(name) == 1


def test_sampling_params_are_accepted(emulator: Any, provider: Provider, name: str) -> None:
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=800)
    result = provider.extract(labelled_email(), EMAIL_ENTITIES, params)
    assert result.params == params
    assert emulator.requests(name) == 1


def test_client_is_reused_across_calls(emulator: Any, provider: Provider, name: str) -> None:
    for _ in range(3):
        extract(provider)
    assert emulator.requests(name) == 3


# --------------------------------------------------------------------------- errors

ERROR_CASES: list[tuple[str, type[ProviderError], int | None]] = [
    ("rate_limit", RateLimitedError, 429),
    ("server", ServerError, 500),
    ("unavailable", OverloadedError, 503),
    ("overloaded", OverloadedError, None),  # 529 from Anthropic, 503 elsewhere
    ("bad_request", BadRequestError, 400),
    ("auth", AuthError, 401),
    ("reset", ProviderConnectionError, None),
    ("malformed", InvalidOutputError, None),
]


def test_schema_violating_answer_is_kept_with_notes(emulator: Any, provider: Provider, name: str) -> None:
    """A weak answer (a field missing, or a confidence of 7) is data: kept, what was wrong noted."""
    emulator.configure(name, error_rate=1.0, errors={"schema": 1})
    result = extract(provider)
    notes = result.notes
    assert notes.dropped or list(notes.clamped.values()) == ["7"]
    assert set(result.fields) | set(notes.dropped) == set(EMAIL_ENTITIES["properties"])
    assert all(0.0 <= f.confidence <= 1.0 for f in result.fields.values())
    assert result.tokens_in > 0
    assert emulator.requests(name) == 1


LOCAL_REFS = {
    "type": "object",
    "$defs": {"name": {"type": ["string", "null"], "description": "A name as written in the email."}},
    "properties": {
        "startup_name": {"$ref": "#/$defs/name"},
        "person_in_charge": {"$ref": "#/$defs/name"},
    },
}


def test_local_refs_reach_the_provider_and_resolve(emulator: Any, provider: Provider, name: str) -> None:
    """``$defs`` travel at the root of the schema each SDK sends, and the answer validates."""
    result = provider.extract(labelled_email(), LOCAL_REFS, SamplingParams())
    assert set(result.fields) == set(LOCAL_REFS["properties"])
    assert not result.notes.dropped
    assert all(isinstance(f.value, str | None) for f in result.fields.values())


@pytest.mark.parametrize(("kind", "cls", "status"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_fault_is_mapped(
    emulator: Any, provider: Provider, name: str, kind: str, cls: type[ProviderError], status: int | None
) -> None:
    emulator.configure(name, error_rate=1.0, errors={kind: 1}, retry_after_s=3)
    with pytest.raises(ProviderError) as info:
        extract(provider)
    e = info.value
    assert type(e) is cls, f"{kind}: got {type(e).__name__}: {e}"
    assert e.provider == name
    assert str(e).startswith(name)
    if status is not None:
        assert e.status == status
    if kind == "overloaded":
        assert e.status == (529 if name == "claude" else 503)
    if kind == "rate_limit":
        assert e.retry_after == 3.0
    elif kind != "overloaded":
        assert e.retry_after is None
    assert emulator.requests(name) == 1, "the SDK retried behind our back"
    assert_no_key(e)
    assert_portable(e)


def test_rate_limit_fractional_retry_after(emulator: Any, provider: Provider, name: str) -> None:
    emulator.configure(name, error_rate=1.0, errors={"rate_limit": 1}, retry_after_s=1.5)
    with pytest.raises(RateLimitedError) as info:
        extract(provider)
    assert info.value.retry_after == 1.5
    assert emulator.requests(name) == 1


def test_provider_down_is_overloaded(emulator: Any, provider: Provider, name: str) -> None:
    emulator.set_down(name, True)
    with pytest.raises(OverloadedError) as info:
        extract(provider)
    assert info.value.status == 503
    emulator.set_down(name, False)
    assert extract(provider).fields
    assert emulator.requests(name) == 2


def test_rejected_key_is_auth_error(emulator: Any, name: str) -> None:
    provider = make_provider(emulator, name, key="bad-key")
    with pytest.raises(AuthError) as info:
        extract(provider)
    assert info.value.provider == name and info.value.status == 401
    assert emulator.requests(name) == 1


def test_timeout_is_honoured(emulator: Any, provider: Provider, name: str) -> None:
    emulator.configure(name, error_rate=1.0, errors={"hang": 1}, hang_s=5)
    start = time.monotonic()
    with pytest.raises(ProviderTimeoutError) as info:
        extract(provider, timeout=0.5)
    elapsed = time.monotonic() - start
    assert elapsed < 4.0, f"waited {elapsed:.1f}s: the 0.5 s timeout was not applied"
    assert info.value.provider == name and info.value.status is None
    assert emulator.requests(name) == 1
    assert_no_key(info.value)
    assert_portable(info.value)


def test_generate_errors_are_mapped_too(emulator: Any, provider: Provider, name: str) -> None:
    emulator.configure(name, error_rate=1.0, errors={"server": 1})
    with pytest.raises(ServerError):
        provider.generate("Say hello.", SamplingParams())
    assert emulator.requests(name) == 1


# --------------------------------------------------------------------------- bad input

BAD_SCHEMAS: list[Any] = [
    {"type": "object", "properties": {"x": {"type": "nonsense"}}},
    {"type": "object", "properties": {}},
    {"type": "array", "items": {"type": "string"}},
    {"type": "object", "properties": {"bad name!": {"type": "string"}}},
    {"type": "object", "properties": {"x": {"$ref": "http://127.0.0.1:9/evil.json"}}},
    {"type": "object", "properties": {"x": {"$ref": "file:///etc/hostname"}}},
    {"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a+)\\1$"}}},
]


@pytest.mark.parametrize(
    "text", ["", "   \n\t", "x" * (MAX_TEXT_CHARS + 1)], ids=["empty", "blank", "oversized"]
)
def test_bad_text_rejected_before_http(emulator: Any, provider: Provider, name: str, text: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        provider.extract(text, EMAIL_ENTITIES, SamplingParams())
    assert info.value.field == "text"
    assert emulator.requests(name) == 0


@pytest.mark.parametrize(
    "schema",
    BAD_SCHEMAS,
    ids=["bad-type", "no-props", "not-object", "bad-name", "http-ref", "file-ref", "backreference"],
)
def test_bad_schema_rejected_before_http(emulator: Any, provider: Provider, name: str, schema: Any) -> None:
    with pytest.raises(InvalidRequestError):
        provider.extract(labelled_email(), schema, SamplingParams())
    assert emulator.requests(name) == 0


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")], ids=["zero", "negative", "nan"])
def test_bad_timeout_rejected_before_http(
    emulator: Any, provider: Provider, name: str, timeout: float
) -> None:
    with pytest.raises(InvalidRequestError, match="timeout"):
        extract(provider, timeout=timeout)
    with pytest.raises(InvalidRequestError, match="timeout"):
        provider.generate("Say hello.", SamplingParams(), timeout=timeout)
    assert emulator.requests(name) == 0


def test_empty_prompt_rejected_before_http(emulator: Any, provider: Provider, name: str) -> None:
    with pytest.raises(InvalidRequestError):
        provider.generate("  ", SamplingParams())
    assert emulator.requests(name) == 0


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 2.5},
        {"temperature": -0.1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"temperature": float("nan")},
    ],
    ids=["t-high", "t-negative", "p-zero", "p-high", "max-tokens-0", "t-nan"],
)
def test_out_of_range_params_never_reach_a_provider(emulator: Any, name: str, params: dict[str, Any]) -> None:
    """Sampling parameters are validated when built; a provider can only receive valid ones."""
    with pytest.raises(ValidationError):
        SamplingParams(**params)
    assert emulator.requests(name) == 0
