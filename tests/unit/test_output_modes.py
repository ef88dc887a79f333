"""Structured-output modes: the order ``auto`` tries, what counts as a refused mode, how JSON is
read from a prompt-only answer, and the emulator flavours' acceptance rules."""

from __future__ import annotations

import pytest

from emulator.wire import WireError
from emulator.wire.flavours import Refused, read_structure
from orchestration.breaker import Outcome, classify
from orchestration.config import ProviderConfig
from orchestration.errors import ConfigError, UnsupportedModeError, error_from_dict
from orchestration.providers import LocalModeMemory
from orchestration.providers.output_modes import (
    AUTO_ORDER,
    is_mode_rejection,
    json_text,
    modes_to_try,
    request_fields,
    schema_from_system,
    with_schema_instruction,
)

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}


def test_auto_tries_every_mode_remembered_first() -> None:
    assert modes_to_try("auto", None) == list(AUTO_ORDER)
    assert modes_to_try("auto", "tools") == ["tools", "json_schema", "json_object", "prompt"]
    assert modes_to_try("json_object", "tools") == ["json_object"]


@pytest.mark.parametrize(
    ("mode", "status", "body", "refused"),
    [
        ("json_schema", 500, "{'loc': ('body', 'response_format', 'type')}", True),
        ("json_schema", 400, 'response_format type must be one of "text" or "json_object"', True),
        ("tools", 400, "gemma3:270m does not support tools", True),
        ("json_schema", 500, "CUDA out of memory", False),  # a real outage, not a refusal
        ("json_schema", 429, "response_format", False),
        ("json_schema", 503, "response_format", False),
        ("prompt", 400, "response_format", False),  # prompt mode sends no format to refuse
    ],
)
def test_what_counts_as_a_refused_mode(mode: str, status: int, body: str, refused: bool) -> None:
    assert is_mode_rejection(mode, status, body) is refused  # type: ignore[arg-type]


def test_json_object_carries_the_schema_in_response_format_and_tools_name_the_function() -> None:
    assert request_fields("json_object", SCHEMA, "t") == {
        "response_format": {"type": "json_object", "schema": SCHEMA}
    }
    tools = request_fields("tools", SCHEMA, "t")
    assert tools["tool_choice"] == {"type": "function", "function": {"name": "t"}}
    assert tools["tools"][0]["function"]["parameters"] == SCHEMA
    assert request_fields("prompt", SCHEMA, "t") == {}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ('Sure! Here it is:\n{"a": {"b": 2}}\nHope that helps.', '{"a": {"b": 2}}'),
        ("no json at all", "no json at all"),
    ],
)
def test_json_text_takes_the_object_out_of_prose_and_fences(raw: str, expected: str) -> None:
    assert json_text(raw) == expected


def test_schema_instruction_round_trips() -> None:
    system = with_schema_instruction("Extract.", SCHEMA)
    assert system.startswith("Extract.") and "JSON" in system
    assert schema_from_system(system) == SCHEMA
    assert schema_from_system("Extract.") is None


def test_local_memory_is_per_server() -> None:
    memory = LocalModeMemory()
    memory.remember("local", "s1", "tools")
    assert memory.recall("local", "s1") == "tools"
    assert memory.recall("local", "s2") is None


def test_unsupported_mode_never_counts_and_round_trips() -> None:
    e = UnsupportedModeError("local: refused", provider="local", status=500, modes=["json_schema"])
    assert classify(e.kind) == Outcome.IGNORED
    back = error_from_dict(e.to_dict())
    assert type(back) is UnsupportedModeError and back.modes == ["json_schema"]


def test_structured_output_config() -> None:
    assert ProviderConfig(kind="openai_compatible", model="m").structured_output == "auto"
    assert ProviderConfig(kind="openai", model="m", structured_output="tools").structured_output == "tools"
    with pytest.raises(ValueError, match="structured_output"):
        ProviderConfig(kind="anthropic", model="m", structured_output="tools")
    with pytest.raises(ValueError):
        ProviderConfig(kind="openai_compatible", model="m", structured_output="grammar")  # type: ignore[arg-type]
    assert ConfigError  # the loader turns these into ConfigError (tested in test_config)


FORMAT_SCHEMA = {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}}
FORMAT_OBJECT = {"type": "json_object", "schema": SCHEMA}


@pytest.mark.parametrize(
    ("flavour", "fmt", "status"),
    [
        ("llama_cpp_python", FORMAT_SCHEMA, 500),
        ("llama_cpp_python", {"type": "grammar"}, 500),
        ("llama_cpp", {"type": "grammar"}, 400),
        ("vllm", {"type": "grammar"}, 400),
        ("openai", FORMAT_OBJECT, 400),
    ],
)
def test_flavours_refuse_in_their_own_shape(flavour: str, fmt: dict, status: int) -> None:
    with pytest.raises(Refused) as caught:
        read_structure(flavour, {"response_format": fmt}, said_json=True)
    reply = caught.value.reply
    assert reply.status == status and "response_format" in str(reply.body)
    assert isinstance(reply.body["error"]["message"], str)


def test_flavours_enforce_what_they_read() -> None:
    assert read_structure("llama_cpp_python", {"response_format": FORMAT_OBJECT}, True).schema == SCHEMA
    assert read_structure("llama_cpp", {"response_format": FORMAT_SCHEMA}, True).schema == SCHEMA
    vllm = read_structure("vllm", {"response_format": FORMAT_OBJECT}, True)
    assert vllm.schema is None and vllm.json_only  # vLLM ignores a schema on json_object
    assert read_structure("ollama", {"response_format": {"type": "grammar"}}, True).schema is None
    with pytest.raises(Refused):  # OpenAI: json_object needs the word JSON in the messages
        read_structure("openai", {"response_format": {"type": "json_object"}}, said_json=False)
    tools = [{"type": "function", "function": {"name": "t", "parameters": SCHEMA}}]
    body = {"tools": tools, "tool_choice": {"function": {"name": "t"}}}
    got = read_structure("llama_cpp_python", body, True)
    assert got.tool_name == "t" and got.schema == SCHEMA
    with pytest.raises(WireError):
        read_structure("vllm", {"tools": tools, "tool_choice": {"function": {"name": "x"}}}, True)
