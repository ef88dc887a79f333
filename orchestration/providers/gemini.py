"""Google Gemini through the official ``google-genai`` SDK; structured output by
``response_json_schema`` with ``response_mime_type="application/json"``.

The SDK retries nothing unless ``retry_options`` is set; we set one attempt explicitly so a
changed default cannot add hidden retries. Automatic function calling and automatic
continuation are turned off so one call is exactly one HTTP request. Transport failures
escape the SDK as raw ``httpx2``/``httpx`` exceptions.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from orchestration.errors import AuthError, ProviderError
from orchestration.providers.base import Completion, Provider, ProviderRequest, billed
from orchestration.providers.http_errors import (
    MALFORMED_EXCEPTIONS,
    ErrorTable,
    invalid_output,
    malformed_error,
    status_error,
    transport_error,
    validation_error,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _ms(seconds: float) -> int:
    """``HttpOptions.timeout`` is whole milliseconds, and 0 would mean no timeout at all."""
    return max(1, round(seconds * 1000))


def retry_info_delay(body: Any) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "3s"``) of an error body."""
    error = body.get("error", body) if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for item in details if isinstance(details, list) else ():
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(item.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _enum_name(value: Any) -> str | None:
    """``FinishReason.STOP`` → ``"STOP"``; the SDK keeps values it does not know as strings."""
    return None if value is None else str(getattr(value, "name", value))


def _api_key_invalid(body: Any) -> bool:
    """Gemini answers a bad key with HTTP 400 and an ``ErrorInfo`` reason ``API_KEY_INVALID``."""
    error = body.get("error", body) if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return any(
        isinstance(item, dict) and str(item.get("reason", "")).startswith("API_KEY_")
        for item in (details if isinstance(details, list) else ())
    )


def status_error_of(provider: str, e: genai_errors.APIError) -> ProviderError:
    """The mapped error of an HTTP error status (RetryInfo and ``API_KEY_INVALID`` honoured)."""
    response = getattr(e, "response", None)
    headers = getattr(response, "headers", None)
    status = int(e.code) if isinstance(e.code, int) else int(getattr(response, "status_code", 0) or 0)
    mapped = status_error(
        provider, status, code=e.status if isinstance(e.status, str) else None,
        api_message=e.message if isinstance(e.message, str) else None, headers=headers,
    )  # fmt: skip
    if mapped.retry_after is None and status == 429:
        delay = retry_info_delay(e.details)
        if delay is not None:
            mapped = mapped.with_details(retry_after=delay)
    if status == 400 and _api_key_invalid(e.details):
        mapped = AuthError(mapped.message, mapped.details)
    return mapped


#: ``google-genai`` raises its own classes for HTTP statuses and bodies; transport failures
#: escape as raw ``httpx2``/``httpx`` exceptions (the last row).
ERROR_TABLE: ErrorTable = (
    (genai_errors.APIError, status_error_of),
    (genai_errors.UnknownApiResponseError, malformed_error),
    (MALFORMED_EXCEPTIONS, malformed_error),
    (pydantic.ValidationError, validation_error),
    (Exception, transport_error),
)


class GeminiProvider(Provider):
    """Gemini via ``models.generate_content``; ``response.text`` is the JSON answer."""

    error_table = ERROR_TABLE

    def __init__(self, name: str, model: str, *, api_key: str | None, base_url: str | None,
                 timeout_s: float) -> None:  # fmt: skip
        super().__init__(name, model, api_key=api_key, base_url=base_url, timeout_s=timeout_s)
        options = types.HttpOptions(
            base_url=base_url, timeout=_ms(timeout_s), retry_options=types.HttpRetryOptions(attempts=1)
        )
        self._client = genai.Client(api_key=api_key, vertexai=False, http_options=options)

    def close(self) -> None:
        """Close the SDK's connection pool."""
        self._client.close()

    def _complete(self, request: ProviderRequest, timeout: float) -> Completion:
        """One ``POST /{version}/models/{model}:generateContent``."""
        params = request.params
        config: dict[str, Any] = {
            "system_instruction": request.system,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_output_tokens": params.max_tokens,
            "http_options": types.HttpOptions(timeout=_ms(timeout)),
            "automatic_function_calling": types.AutomaticFunctionCallingConfig(disable=True),
            "automatic_continuation": False,
        }
        if request.output_schema is not None:
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = request.output_schema
        response = self._client.models.generate_content(
            model=self.model, contents=request.prompt, config=types.GenerateContentConfig(**config)
        )
        usage = response.usage_metadata
        out = (getattr(usage, "candidates_token_count", 0) or 0) + (
            getattr(usage, "thoughts_token_count", 0) or 0  # thinking tokens are billed as output
        )
        bill = billed(getattr(usage, "prompt_token_count", 0), out, response.model_version or self.model)
        text = response.text
        candidate = response.candidates[0] if response.candidates else None
        finish = _enum_name(getattr(candidate, "finish_reason", None))
        if not text:
            blocked = _enum_name(getattr(response.prompt_feedback, "block_reason", None))
            why = f"prompt blocked ({blocked})" if blocked else f"no text (finish_reason={finish})"
            raise invalid_output(self.name, f"response has {why}", finish_reason=finish or blocked, **bill)
        if request.output_schema is not None and finish == "MAX_TOKENS":
            raise invalid_output(
                self.name, "structured answer truncated at max_tokens", finish_reason=finish, **bill
            )
        return Completion(content=text, tokens_in=bill["tokens_in"], tokens_out=bill["tokens_out"],
                          model=bill["model"])  # fmt: skip
