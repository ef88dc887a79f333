"""OpenAI Chat Completions (``POST .../v1/chat/completions``): requests, answers, errors."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request

from emulator.wire import (
    Call,
    ErrorReply,
    Reply,
    WireError,
    bearer,
    new_id,
    opt_float,
    opt_int,
    retry_after_header,
    text_of,
)
from emulator.wire.flavours import read_structure
from orchestration.providers.output_modes import schema_from_system

# kind -> (status, error.type, error.code, message)
_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "rate_limit": (429, "requests", "rate_limit_exceeded",
                   "Rate limit reached for requests. Please try again later."),
    "server": (500, "server_error", None,
               "The server had an error while processing your request. Sorry about that!"),
    "unavailable": (503, "server_error", None, "The service is temporarily unavailable."),
    "overloaded": (503, "server_error", None,
                   "The engine is currently overloaded, please try again later."),
    "down": (503, "server_error", None, "The service is temporarily unavailable."),
    "bad_request": (400, "invalid_request_error", None, "Invalid request."),
    "auth": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    "not_found": (404, "invalid_request_error", "unknown_url", "Unknown request URL."),
}  # fmt: skip


class OpenAIWire:
    """The Chat Completions wire format (also spoken by OpenAI-compatible servers)."""

    name = "openai"

    def api_key(self, request: Request) -> str | None:
        """``Authorization: Bearer <key>``."""
        return bearer(request)

    def parse(self, body: Any, path_params: dict[str, str]) -> Call:
        """Messages (system/developer and user), structured output as the flavour reads it
        (``path_params["flavour"]``, default ``openai``), sampling."""
        if not isinstance(body, dict):
            raise WireError("request body must be a JSON object")
        messages = body.get("messages")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise WireError("you must provide a model parameter")
        if not isinstance(messages, list) or not messages:
            raise WireError("messages must be a non-empty array")
        system, user = [], []
        for msg in messages:
            if not isinstance(msg, dict):
                raise WireError("each message must be an object")
            role, text = msg.get("role"), text_of(msg.get("content"))
            if role in ("system", "developer"):
                system.append(text)
            elif role == "user":
                user.append(text)
        system_text = "\n\n".join(system)
        said_json = "json" in f"{system_text} {' '.join(user)}".lower()
        structure = read_structure(path_params.get("flavour", "openai"), body, said_json)
        schema, fenced = structure.schema, False
        if schema is None:  # json_object without a schema, or no format: the prompt's schema
            schema = schema_from_system(system_text)
            fenced = schema is not None and not structure.json_only
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        return Call(
            model=model, system=system_text, user="\n\n".join(user), schema=schema,
            tool_name=structure.tool_name, fenced=fenced,
            temperature=opt_float(body.get("temperature"), "temperature"),
            max_tokens=opt_int(max_tokens, "max_tokens"),
        )  # fmt: skip

    def success(self, call: Call, reply: Reply) -> dict[str, Any]:
        """A ``chat.completion`` object with usage."""
        content = reply.content if isinstance(reply.content, str) else str(reply.content)
        message: dict[str, Any] = {
            "role": "assistant", "content": content, "refusal": None, "annotations": []
        }  # fmt: skip
        finish = "length" if reply.truncated else "stop"
        if call.tool_name:
            call_id = new_id("call_")
            message["content"] = None
            function = {"name": call.tool_name, "arguments": content}
            message["tool_calls"] = [{"id": call_id, "type": "function", "function": function}]
            finish = "length" if reply.truncated else "tool_calls"
        return {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": reply.tokens_in,
                "completion_tokens": reply.tokens_out,
                "total_tokens": reply.tokens_in + reply.tokens_out,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_emulator",
        }

    def error(self, kind: str, message: str, retry_after_s: float) -> ErrorReply:
        """``{"error": {message, type, param, code}}`` with retry-after on 429."""
        status, etype, code, default = _ERRORS.get(kind, _ERRORS["server"])
        headers = {"x-request-id": new_id("req_")}
        if status == 429:
            headers["retry-after"] = retry_after_header(retry_after_s)
            headers["x-ratelimit-remaining-requests"] = "0"
        body = {"error": {"message": message or default, "type": etype, "param": None, "code": code}}
        return ErrorReply(status, body, headers)
