"""Structured output against every OpenAI-compatible server flavour of the emulator: ``auto``
finds a mode each server accepts within one call, remembers it (fleet-wide in Redis), and a
refused mode never counts toward the circuit breaker; forced modes work where the server
supports them and otherwise fail with UnsupportedModeError."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from emulator.wire.flavours import FLAVOURS
from orchestration.breaker import BreakerState, RedisBreaker
from orchestration.config import BreakerConfig, ProviderConfig
from orchestration.errors import ServerError, UnsupportedModeError
from orchestration.models import SamplingParams
from orchestration.providers import LocalModeMemory, ModeMemory, build_provider
from orchestration.providers.openai import OpenAIProvider
from orchestration.schemas import EMAIL_ENTITIES
from orchestration.state import RedisModeMemory, output_mode_key

from .test_providers import labelled_email

NAME = "local"
PREFIX = "quorum:"

#: The mode ``auto`` settles on per flavour: the first of json_schema, json_object, tools, prompt
#: that the server accepts.
SETTLES_ON = {
    "openai": "json_schema",
    "llama_cpp_python": "json_object",
    "llama_cpp": "json_schema",
    "vllm": "json_schema",
    "ollama": "json_schema",
}
#: Forced modes each flavour refuses (everything else works).
REFUSED = {("llama_cpp_python", "json_schema"), ("openai", "json_object")}
MODES = ("json_schema", "json_object", "tools", "prompt")


@pytest.fixture
def redis() -> Iterator[fakeredis.FakeRedis]:
    """An empty fakeredis with Lua (the breaker's scripts), shared by the "workers" of a test."""
    client = fakeredis.FakeRedis()
    client.flushall()
    yield client
    client.close()


def adapter(emulator: Any, mode: str = "auto", modes: ModeMemory | None = None,
            model: str = "gemma-3-270m") -> OpenAIProvider:  # fmt: skip
    """An openai_compatible adapter for ``local`` built as a worker builds it."""
    config = ProviderConfig(kind="openai_compatible", model=model, structured_output=mode, timeout_s=5.0)  # type: ignore[arg-type]
    built = build_provider(NAME, config, emulator_url=emulator.url, env={}, modes=modes or LocalModeMemory())
    assert isinstance(built, OpenAIProvider)
    return built


def extract(provider: OpenAIProvider) -> Any:
    return provider.extract(labelled_email(), EMAIL_ENTITIES, SamplingParams())


def assert_valid(result: Any) -> None:
    assert set(result.fields) == set(EMAIL_ENTITIES["properties"])
    assert all(0.0 <= f.confidence <= 1.0 for f in result.fields.values())
    assert result.tokens_in > 0 and result.tokens_out > 0


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_auto_answers_on_every_flavour_and_remembers_the_mode(
    emulator: Any, redis: fakeredis.FakeRedis, flavour: str
) -> None:
    emulator.configure(NAME, flavour=flavour)
    memory = RedisModeMemory(redis, PREFIX)
    first = adapter(emulator, modes=memory)
    assert_valid(extract(first))
    refused = 0 if SETTLES_ON[flavour] == "json_schema" else 1
    assert emulator.requests(NAME) == 1 + refused
    assert emulator.errors(NAME).get("refused", 0) == refused
    stored = {k.decode(): v.decode() for k, v in redis.hgetall(output_mode_key(PREFIX, NAME)).items()}
    assert stored["mode"] == SETTLES_ON[flavour] and stored["server"] == first.server
    # Another worker (its own adapter, same Redis) goes straight to the remembered mode.
    second = adapter(emulator, modes=RedisModeMemory(redis, PREFIX))
    assert_valid(extract(second))
    assert emulator.requests(NAME) == 2 + refused
    assert emulator.errors(NAME).get("refused", 0) == refused


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("mode", MODES)
def test_forced_modes(emulator: Any, flavour: str, mode: str) -> None:
    emulator.configure(NAME, flavour=flavour)
    provider = adapter(emulator, mode)
    if (flavour, mode) in REFUSED:
        with pytest.raises(UnsupportedModeError) as caught:
            extract(provider)
        assert caught.value.provider == NAME and caught.value.modes == [mode]
        assert not caught.value.counts_for_breaker
        assert emulator.requests(NAME) == 1  # a forced mode is never swapped for another
    else:
        assert_valid(extract(provider))
        assert emulator.requests(NAME) == 1


def test_llama_cpp_python_refusal_is_its_http_500_yet_never_counts(
    emulator: Any, redis: fakeredis.FakeRedis
) -> None:
    """The refusal arrives as llama-cpp-python's HTTP 500; forced into it, ten calls in a row
    leave the breaker closed, while ten real 500s open it."""
    emulator.configure(NAME, flavour="llama_cpp_python")
    config = BreakerConfig(consecutive_failures=3, min_calls=3)
    breaker = RedisBreaker(redis, PREFIX, config)
    provider = adapter(emulator, "json_schema")
    for i in range(10):
        permit = breaker.acquire(NAME, 1000.0 + i)
        assert permit.allowed
        with pytest.raises(UnsupportedModeError) as caught:
            extract(provider)
        assert caught.value.status == 500
        breaker.record_failure(NAME, 1000.0 + i, caught.value, permit)
    assert breaker.state(NAME, 1011.0).state == BreakerState.CLOSED
    emulator.configure(NAME, error_rate=1.0, errors={"server": 1.0})
    auto = adapter(emulator)
    for i in range(3):
        permit = breaker.acquire(NAME, 1020.0 + i)
        with pytest.raises(ServerError) as real:
            extract(auto)
        breaker.record_failure(NAME, 1020.0 + i, real.value, permit)
    assert breaker.state(NAME, 1024.0).state == BreakerState.OPEN


def test_a_mode_remembered_for_another_server_is_not_used(emulator: Any, redis: fakeredis.FakeRedis) -> None:
    emulator.configure(NAME, flavour="llama_cpp_python")
    memory = RedisModeMemory(redis, PREFIX)
    extract(adapter(emulator, modes=memory))
    assert emulator.requests(NAME) == 2
    # Same provider name, another model: the record is about another server; probe afresh.
    extract(adapter(emulator, modes=memory, model="other-model"))
    assert emulator.requests(NAME) == 4


def test_a_remembered_mode_the_server_stops_accepting_is_replaced(
    emulator: Any, redis: fakeredis.FakeRedis
) -> None:
    memory = RedisModeMemory(redis, PREFIX)
    provider = adapter(emulator, modes=memory)
    emulator.configure(NAME, flavour="llama_cpp")
    extract(provider)
    assert memory.recall(NAME, provider.server) == "json_schema"
    emulator.configure(NAME, flavour="llama_cpp_python")  # the operator swapped the server
    assert_valid(extract(provider))
    assert memory.recall(NAME, provider.server) == "json_object"


def test_redis_outage_falls_back_to_this_process(emulator: Any) -> None:
    """With Redis unreachable the mode is still learnt and reused within the process."""
    import redis as redis_lib

    dead = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    emulator.configure(NAME, flavour="llama_cpp_python")
    provider = adapter(emulator, modes=RedisModeMemory(dead, PREFIX))
    assert_valid(extract(provider))
    assert_valid(extract(provider))
    assert emulator.requests(NAME) == 3  # one refusal, then the learnt mode twice


def test_free_text_sends_no_structured_output(emulator: Any) -> None:
    emulator.configure(NAME, flavour="llama_cpp_python")
    result = adapter(emulator, "json_schema").generate("Say hello.", SamplingParams())
    assert result.text and emulator.requests(NAME) == 1
