"""Flavours of OpenAI-compatible servers: which structured-output requests each accepts, what
it enforces, and the error body it answers with when it refuses one.

- ``openai``: ``text``, ``json_object`` (the messages must say "JSON"; no ``schema`` key),
  ``json_schema``; tools. Refusals: 400 ``invalid_request_error`` naming the parameter.
- ``llama_cpp_python`` (``python -m llama_cpp.server``): ``text`` or ``json_object`` with an
  optional ``schema`` it enforces by grammar; tools with a named ``tool_choice``. Anything
  else fails its request model, and its route handler answers every exception with HTTP 500.
- ``llama_cpp`` (llama.cpp ``llama-server``): ``text``, ``json_object`` (+ ``schema``),
  ``json_schema``; tools. Refusals: 400 ``{"error": {"code", "message", "type"}}``.
- ``vllm``: ``text``, ``json_object`` (any JSON: a ``schema`` key is ignored), ``json_schema``,
  ``structural_tag``; tools. Refusals: 400 ``BadRequestError`` with the validation message.
- ``ollama`` (its ``/v1`` endpoint): ``json_object`` (any JSON), ``json_schema``; an unknown
  type is ignored (free text); tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from emulator.wire import ErrorReply, WireError, new_id

Flavour = Literal["openai", "llama_cpp_python", "llama_cpp", "vllm", "ollama"]
FLAVOURS: tuple[str, ...] = Flavour.__args__  # type: ignore[attr-defined]

#: ``response_format`` types each flavour accepts (others are refused, except by Ollama).
_ACCEPTED: dict[str, frozenset[str]] = {
    "openai": frozenset({"text", "json_object", "json_schema"}),
    "llama_cpp_python": frozenset({"text", "json_object"}),
    "llama_cpp": frozenset({"text", "json_object", "json_schema"}),
    "vllm": frozenset({"text", "json_object", "json_schema", "structural_tag"}),
    "ollama": frozenset({"text", "json_object", "json_schema"}),
}
#: Flavours that enforce ``response_format.schema`` in ``json_object`` mode.
_OBJECT_SCHEMA = frozenset({"llama_cpp_python", "llama_cpp"})


@dataclass(frozen=True)
class Structure:
    """What a request asked of the answer: the schema a server enforces, a tool to call, or
    ``json_only`` (any JSON object, its shape left to the prompt)."""

    schema: dict[str, Any] | None = None
    tool_name: str | None = None
    json_only: bool = False


class Refused(WireError):
    """The flavour refuses the request; ``reply`` is its real error response."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(str(reply.body))
        self.reply = reply


def refusal(flavour: str, message: str, param: str) -> Refused:
    """``flavour``'s error response for a refused ``param``."""
    if flavour == "llama_cpp_python":
        body: dict[str, Any] = {"error": {"message": message, "type": "internal_server_error",
                                          "param": None, "code": None}}  # fmt: skip
        return Refused(ErrorReply(500, body, {}))
    if flavour == "llama_cpp":
        body = {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}
    elif flavour == "vllm":
        body = {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}
    else:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return Refused(ErrorReply(400, body, {"x-request-id": new_id("req_")}))


def _type_refused(flavour: str, kind: str) -> Refused:
    if flavour == "llama_cpp_python":
        detail = {"type": "literal_error", "loc": ("body", "response_format", "type"),
                  "msg": "Input should be 'text' or 'json_object'", "input": kind}  # fmt: skip
        return refusal(flavour, f"1 validation error:\n  {detail}\n", "response_format")
    if flavour == "llama_cpp":
        msg = f'response_format type must be one of "text" or "json_object", but got: {kind}'
        return refusal(flavour, msg, "response_format")
    if flavour == "vllm":
        msg = (
            "1 validation error for ChatCompletionRequest\nresponse_format.type\n  Input should be "
            f"'text', 'json_object', 'json_schema' or 'structural_tag' [input_value='{kind}']"
        )
        return refusal(flavour, msg, "response_format")
    return refusal(flavour, f"Invalid value: '{kind}'. Supported values are: 'json_object', "
                   "'json_schema', and 'text'.", "response_format.type")  # fmt: skip


def _schema(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"{where} must be an object")
    return value


def _response_format(flavour: str, fmt: Any, said_json: bool) -> Structure:
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise WireError("response_format must be an object with a type")
    kind = fmt["type"]
    if kind not in _ACCEPTED[flavour]:
        if flavour == "ollama":
            return Structure()  # Ollama ignores a type it does not know
        raise _type_refused(flavour, kind)
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise WireError("response_format.json_schema must be an object")
        return Structure(schema=_schema(spec.get("schema"), "response_format.json_schema.schema"))
    if kind == "json_object":
        if flavour == "openai" and "schema" in fmt:
            raise refusal(flavour, "Additional properties are not allowed ('schema' was unexpected) "
                          "- 'response_format'", "response_format")  # fmt: skip
        if flavour == "openai" and not said_json:
            raise refusal(flavour, "'messages' must contain the word 'json' in some form, to use "
                          "'response_format' of type 'json_object'.", "messages")  # fmt: skip
        if flavour in _OBJECT_SCHEMA and "schema" in fmt:
            return Structure(schema=_schema(fmt["schema"], "response_format.schema"))
        return Structure(json_only=True)
    return Structure()


def _tool_choice(tools: Any, choice: Any) -> Structure:
    if not isinstance(tools, list) or not tools:
        raise WireError("tools must be a non-empty array")
    by_name: dict[str, dict[str, Any]] = {}
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise WireError("each tool must have a function with a name")
        by_name[fn["name"]] = _schema(fn.get("parameters", {}), "tools[].function.parameters")
    name = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
    elif choice in (None, "auto", "required") and len(by_name) == 1:
        name = next(iter(by_name))
    if name not in by_name:
        raise WireError("tool_choice must name one of the tools")
    return Structure(schema=by_name[name], tool_name=name)


def read_structure(flavour: str, body: dict[str, Any], said_json: bool) -> Structure:
    """What ``body`` asks of the answer under ``flavour`` (:class:`Refused` when refused)."""
    if flavour not in _ACCEPTED:
        raise WireError(f"unknown flavour {flavour!r}")
    if body.get("tools") is not None:
        return _tool_choice(body["tools"], body.get("tool_choice"))
    if body.get("response_format") is not None:
        return _response_format(flavour, body["response_format"], said_json)
    return Structure()
