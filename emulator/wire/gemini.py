"""Gemini ``POST .../{v1,v1beta}/models/{model}:generateContent``: requests, answers, errors."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from emulator.wire import (
    Call,
    ErrorReply,
    Reply,
    WireError,
    new_id,
    opt_float,
    opt_int,
    retry_after_header,
    text_of,
)

# kind -> (status, error.status, message)
_ERRORS: dict[str, tuple[int, str, str]] = {
    "rate_limit": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "server": (500, "INTERNAL", "An internal error has occurred. Please retry."),
    "unavailable": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "overloaded": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "down": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "bad_request": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "auth": (401, "UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    "not_found": (404, "NOT_FOUND", "Requested entity was not found."),
}


def _field(obj: dict[str, Any], camel: str) -> Any:
    """``obj[camel]``, else the same field under its snake_case (proto) name; None when neither."""
    value = obj.get(camel)
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return value if value is not None else obj.get(snake)


class GeminiWire:
    """The Gemini API wire format; structured output via responseMimeType + a JSON schema."""

    name = "gemini"

    def api_key(self, request: Request) -> str | None:
        """``x-goog-api-key`` header or ``?key=``."""
        return request.headers.get("x-goog-api-key") or request.query_params.get("key")

    def parse(self, body: Any, path_params: dict[str, str]) -> Call:
        """contents + systemInstruction, generationConfig (schema, temperature, max tokens).

        Like the real API (protobuf JSON), every field is read in lowerCamelCase or snake_case:
        ``generation_config.response_json_schema`` is ``generationConfig.responseJsonSchema``.
        """
        if not isinstance(body, dict):
            raise WireError("request body must be a JSON object")
        contents = body.get("contents")
        if isinstance(contents, dict):
            contents = [contents]
        if not isinstance(contents, list) or not contents:
            raise WireError("contents is not specified")
        user = [
            text_of(c.get("parts"))
            for c in contents
            if isinstance(c, dict) and c.get("role", "user") == "user"
        ]
        sys_inst = _field(body, "systemInstruction") or {}
        system = text_of(sys_inst.get("parts")) if isinstance(sys_inst, dict) else text_of(sys_inst)
        config = _field(body, "generationConfig") or {}
        if not isinstance(config, dict):
            raise WireError("generationConfig must be an object")
        schema = _field(config, "responseJsonSchema") or _field(config, "responseSchema")
        if schema is not None and not isinstance(schema, dict):
            raise WireError("responseJsonSchema must be an object")
        return Call(
            model=path_params.get("model", "gemini"), system=system, user="\n\n".join(user),
            schema=schema, temperature=opt_float(_field(config, "temperature"), "temperature"),
            max_tokens=opt_int(_field(config, "maxOutputTokens"), "maxOutputTokens"),
        )  # fmt: skip

    def success(self, call: Call, reply: Reply) -> dict[str, Any]:
        """A GenerateContentResponse with one candidate and usageMetadata."""
        text = reply.content if isinstance(reply.content, str) else str(reply.content)
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": text}], "role": "model"},
                    "finishReason": "MAX_TOKENS" if reply.truncated else "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": reply.tokens_in,
                "candidatesTokenCount": reply.tokens_out,
                "totalTokenCount": reply.tokens_in + reply.tokens_out,
            },
            "modelVersion": call.model,
            "responseId": new_id(""),
        }

    def error(self, kind: str, message: str, retry_after_s: float) -> ErrorReply:
        """``{"error": {code, message, status}}`` (RetryInfo and retry-after on 429)."""
        status, gstatus, default = _ERRORS.get(kind, _ERRORS["server"])
        error: dict[str, Any] = {"code": status, "message": message or default, "status": gstatus}
        headers: dict[str, str] = {}
        if status == 429:
            headers["retry-after"] = retry_after_header(retry_after_s)
            error["details"] = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after_s:g}s"}
            ]
        return ErrorReply(status, {"error": error}, headers)
