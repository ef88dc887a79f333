"""Usage and output caps through every adapter's real SDK against the emulator: an answer that
fails parsing still reports the tokens the server billed, and the provider's ``max_tokens``
(or the job's override) is what the server receives."""

from __future__ import annotations

from typing import Any

import pytest

from orchestration.errors import InvalidOutputError
from orchestration.models import SamplingParams
from orchestration.providers import build_provider
from orchestration.schemas import EMAIL_ENTITIES

from .support import CONFIGS, FAKE_KEY, key_env, make_provider
from .test_providers import extract, labelled_email


def test_an_unusable_answer_carries_the_billed_usage(emulator: Any, provider: Any, name: str) -> None:
    emulator.configure(name, error_rate=1.0, errors={"malformed": 1})
    with pytest.raises(InvalidOutputError) as info:
        extract(provider)
    e = info.value
    assert e.details["tokens_in"] > 0 and e.details["tokens_out"] > 0, e.details
    assert e.details["model"]
    emulator.configure(name, error_rate=0.0)
    answered = extract(provider)  # the same request answered: the same prompt size is billed
    assert e.details["tokens_in"] == answered.tokens_in


def test_a_kept_weak_answer_reports_its_usage(emulator: Any, provider: Any, name: str) -> None:
    """A schema-violating answer is kept as a partial or clamped answer, with its billed usage."""
    emulator.configure(name, error_rate=1.0, errors={"schema": 1})
    weak = extract(provider)
    assert weak.notes.partial or weak.notes.clamped, weak.notes
    assert weak.tokens_in > 0 and weak.tokens_out > 0


def _capped(emulator: Any, name: str, max_tokens: int) -> Any:
    config = CONFIGS[name].model_copy(update={"max_tokens": max_tokens})
    return build_provider(name, config, emulator_url=emulator.url, env={key_env(name): FAKE_KEY})


def test_the_providers_max_tokens_reaches_the_server(emulator: Any, name: str) -> None:
    provider = _capped(emulator, name, 3)  # far below any answer: the server cuts it short
    try:
        with pytest.raises(InvalidOutputError) as info:
            provider.extract(labelled_email(), EMAIL_ENTITIES, SamplingParams())
        assert info.value.details["tokens_out"] == 3, info.value  # billed up to the cap
        # the job's own max_tokens wins over the provider's
        result = provider.extract(labelled_email(), EMAIL_ENTITIES, SamplingParams(max_tokens=2048))
        assert result.fields and result.params.max_tokens == 2048
    finally:
        provider.close()  # type: ignore[attr-defined]


def test_the_default_cap_is_sent_and_fits_an_extraction(emulator: Any, name: str) -> None:
    provider = make_provider(emulator, name)
    try:
        assert provider.max_tokens == 1024
        result = extract(provider)
        assert result.params.max_tokens == 1024 and result.fields
    finally:
        provider.close()  # type: ignore[attr-defined]
