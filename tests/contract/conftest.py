"""Fixtures of the provider contract suite: one emulator per module, and each adapter built
through the registry exactly as a worker builds it (real SDK, real HTTP, no mocks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from orchestration.providers import Provider
from stack.local import start_emulator

from .support import CONFIGS, PROFILE, make_provider


@pytest.fixture(scope="module")
def emulator() -> Iterator[Any]:
    """One emulator on a free loopback port for the whole module."""
    with start_emulator(profile=PROFILE, port=0) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _fresh_emulator(request: pytest.FixtureRequest) -> None:
    """Counters and overrides back to the profile before every test that uses the emulator."""
    if "emulator" in request.fixturenames:
        request.getfixturevalue("emulator").reset()


@pytest.fixture(params=sorted(CONFIGS))
def name(request: pytest.FixtureRequest) -> str:
    """Each adapter kind in turn: claude (anthropic), gemini, local (openai_compatible), openai."""
    return str(request.param)


@pytest.fixture
def provider(emulator: Any, name: str) -> Iterator[Provider]:
    """A fresh adapter per test (no pooled connection carries over from a fault)."""
    p = make_provider(emulator, name)
    yield p
    p.close()  # type: ignore[attr-defined]
