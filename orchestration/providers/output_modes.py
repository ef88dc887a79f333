"""Structured-output modes of Chat Completions servers, and which one a server accepts.

OpenAI speaks ``response_format`` ``json_schema``; llama-cpp-python only ``json_object`` with the
schema attached (and answers HTTP 500 to anything else); llama.cpp, vLLM and Ollama speak both
or more. A provider is set to one mode, or to ``auto``: try the modes in :data:`AUTO_ORDER`
within the same call, skip the ones the server rejects, and remember the one that worked.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Literal, Protocol

OutputMode = Literal["json_schema", "json_object", "tools", "prompt"]
StructuredOutput = Literal["auto", "json_schema", "json_object", "tools", "prompt"]

#: The order ``auto`` tries: strongest server-side guarantee first, the prompt alone last.
AUTO_ORDER: tuple[OutputMode, ...] = ("json_schema", "json_object", "tools", "prompt")

#: Starts the schema appended to the system message in ``json_object`` and ``prompt`` modes
#: (OpenAI's ``json_object`` also insists that the messages say "JSON").
SCHEMA_MARKER = "Reply with one JSON object, and nothing else, that satisfies this JSON Schema:"

#: Words in an error body that say the server refused the *mode*, not the request as a whole.
_MODE_WORDS: dict[OutputMode, tuple[str, ...]] = {
    "json_schema": ("response_format", "json_schema"),
    "json_object": ("response_format", "json_object"),
    "tools": ("tools", "tool_choice", "function calling"),
    "prompt": (),
}
#: Statuses a mode rejection comes with: 400-class refusals and llama-cpp-python's 500.
_REJECTION_STATUSES = frozenset({400, 404, 415, 422, 500, 501})


def modes_to_try(setting: StructuredOutput, remembered: OutputMode | None) -> list[OutputMode]:
    """The modes one call tries, in order: the configured one, or ``auto``'s ladder."""
    if setting != "auto":
        return [setting]
    order = list(AUTO_ORDER)
    if remembered in order:
        order.remove(remembered)
        order.insert(0, remembered)
    return order


def with_schema_instruction(system: str, schema: dict[str, Any]) -> str:
    """``system`` followed by the schema the answer must satisfy (modes that don't enforce it)."""
    return f"{system}\n\n{SCHEMA_MARKER}\n{json.dumps(schema, ensure_ascii=False)}"


def schema_from_system(system: str) -> dict[str, Any] | None:
    """The schema :func:`with_schema_instruction` appended (None if absent or not an object)."""
    _, found, tail = system.rpartition(SCHEMA_MARKER + "\n")
    if not found:
        return None
    try:
        schema = json.loads(tail)
    except ValueError:
        return None
    return schema if isinstance(schema, dict) else None


def request_fields(mode: OutputMode, schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The members of a Chat Completions request body that ask for ``schema`` in ``mode``.

    ``json_object`` attaches the schema inside ``response_format`` the way llama.cpp and
    llama-cpp-python read it (``{"type": "json_object", "schema": ...}``), though it is not
    part of OpenAI's API.
    """
    if mode == "json_schema":
        spec = {"name": name, "schema": schema, "strict": True}
        return {"response_format": {"type": "json_schema", "json_schema": spec}}
    if mode == "json_object":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if mode == "tools":
        tool = {"type": "function", "function": {"name": name, "parameters": schema,
                                                 "description": "Record the extracted fields."}}  # fmt: skip
        return {"tools": [tool], "tool_choice": {"type": "function", "function": {"name": name}}}
    return {}


def is_mode_rejection(mode: OutputMode, status: int, body_text: str) -> bool:
    """Whether an HTTP error refused ``mode`` itself (so another mode may succeed)."""
    if status not in _REJECTION_STATUSES:
        return False
    text = body_text.lower()
    return any(word in text for word in _MODE_WORDS[mode])


def json_text(content: str) -> str:
    """The JSON in a prompt-mode answer: Markdown fences and text around the object removed."""
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text.strip()


class ModeMemory(Protocol):
    """Where the mode that worked for a provider is kept (Redis for a fleet, a dict alone)."""

    def recall(self, provider: str, server: str) -> OutputMode | None:
        """The mode that last worked for ``provider`` at ``server`` (a fingerprint), if any."""

    def remember(self, provider: str, server: str, mode: OutputMode) -> None:
        """Record that ``mode`` worked for ``provider`` at ``server``."""


class LocalModeMemory:
    """A per-process :class:`ModeMemory` (the CLI's one-off calls, tests, Redis outages)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._modes: dict[tuple[str, str], OutputMode] = {}

    def recall(self, provider: str, server: str) -> OutputMode | None:
        """The mode recorded for ``(provider, server)`` in this process."""
        with self._lock:
            return self._modes.get((provider, server))

    def remember(self, provider: str, server: str, mode: OutputMode) -> None:
        """Record ``mode`` for ``(provider, server)`` in this process."""
        with self._lock:
            self._modes[(provider, server)] = mode
