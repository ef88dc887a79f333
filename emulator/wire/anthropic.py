"""Anthropic Messages (``POST .../v1/messages``): requests, tool-use answers, errors."""

from __future__ import annotations

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

# kind -> (status, error.type, message)
_ERRORS: dict[str, tuple[int, str, str]] = {
    "rate_limit": (429, "rate_limit_error", "Number of requests has exceeded your rate limit."),
    "server": (500, "api_error", "Internal server error"),
    "unavailable": (503, "api_error", "Service unavailable"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "down": (503, "api_error", "Service unavailable"),
    "bad_request": (400, "invalid_request_error", "Invalid request"),
    "auth": (401, "authentication_error", "invalid x-api-key"),
    "not_found": (404, "not_found_error", "Not found"),
}


class AnthropicWire:
    """The Messages API wire format; structured output arrives as a forced tool call."""

    name = "anthropic"

    def api_key(self, request: Request) -> str | None:
        """``x-api-key``, or ``Authorization: Bearer`` (which anthropic 2.x sends)."""
        return request.headers.get("x-api-key") or bearer(request)

    def parse(self, body: Any, path_params: dict[str, str]) -> Call:
        """Messages (string or content blocks), system, tools + tool_choice, sampling."""
        if not isinstance(body, dict):
            raise WireError("request body must be a JSON object")
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise WireError("model: Field required")
        if not isinstance(messages, list) or not messages:
            raise WireError("messages: at least one message is required")
        max_tokens = opt_int(body.get("max_tokens"), "max_tokens")
        if max_tokens is None:
            raise WireError("max_tokens: Field required")
        turns = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        user = [text_of(m.get("content")) for m in turns]
        schema, tool_name = self._tool(body.get("tools"), body.get("tool_choice"))
        return Call(
            model=model, system=text_of(body.get("system")), user="\n\n".join(user),
            schema=schema, tool_name=tool_name,
            temperature=opt_float(body.get("temperature"), "temperature"), max_tokens=max_tokens,
        )  # fmt: skip

    @staticmethod
    def _tool(tools: Any, choice: Any) -> tuple[dict[str, Any] | None, str | None]:
        """The input schema and name of the tool the model must (or may) call."""
        if not isinstance(tools, list) or not tools:
            return None, None
        wanted = choice.get("name") if isinstance(choice, dict) and choice.get("type") == "tool" else None
        if isinstance(choice, dict) and choice.get("type") == "none":
            return None, None
        for tool in tools:
            if isinstance(tool, dict) and (wanted is None or tool.get("name") == wanted):
                schema = tool.get("input_schema")
                if not isinstance(schema, dict):
                    raise WireError(f"tools: {tool.get('name')}: input_schema must be an object")
                return schema, str(tool.get("name"))
        raise WireError(f"tool_choice names an unknown tool {wanted!r}")

    def success(self, call: Call, reply: Reply) -> dict[str, Any]:
        """A ``message`` with a ``tool_use`` block (object content) or a ``text`` block."""
        if isinstance(reply.content, dict):
            block = {"type": "tool_use", "id": new_id("toolu_"), "name": call.tool_name or "tool",
                     "input": reply.content}  # fmt: skip
            stop = "tool_use"
        else:
            block = {"type": "text", "text": reply.content}
            stop = "end_turn"
        return {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [block],
            "stop_reason": "max_tokens" if reply.truncated else stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.tokens_in,
                "output_tokens": reply.tokens_out,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def error(self, kind: str, message: str, retry_after_s: float) -> ErrorReply:
        """``{"type": "error", "error": {type, message}}`` with retry-after on 429."""
        status, etype, default = _ERRORS.get(kind, _ERRORS["server"])
        request_id = new_id("req_")
        headers = {"request-id": request_id}
        if status == 429:
            headers["retry-after"] = retry_after_header(retry_after_s)
        body = {"type": "error", "error": {"type": etype, "message": message or default},
                "request_id": request_id}  # fmt: skip
        return ErrorReply(status, body, headers)
