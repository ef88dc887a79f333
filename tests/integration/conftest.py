"""Integration fixtures: the emulator and a fleet of real worker processes, shared per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator.admin import EmulatorHandle
from stack.local import start_emulator
from tests.integration.fleet import Fleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorHandle]:
    """The provider emulator in its own process, fast default profile."""
    with start_emulator() as handle:
        yield handle


@pytest.fixture(scope="module")
def fleet(
    redis_url: str, emulator: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """Two real worker processes (threads pool) against the session's Valkey and emulator."""
    f = Fleet(redis_url=redis_url, emulator_url=emulator.url, workdir=tmp_path_factory.mktemp("fleet"))
    try:
        f.start_worker("w1")
        f.start_worker("w2")
        yield f
    finally:
        f.stop()


@pytest.fixture
def clean(fleet: Fleet, emulator: EmulatorHandle) -> Iterator[Fleet]:
    """A fleet with fresh shared state and an emulator with no faults or counts."""
    fleet.reset_state()
    emulator.reset()
    yield fleet
    emulator.reset()
