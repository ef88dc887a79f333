"""Anthropic Claude through the official ``anthropic`` SDK; structured output by forced tool use.

SDK 2.x sends ``anthropic-version: 2026-10-21``, which rejects ``temperature``/``top_p``/``top_k``
with HTTP 400 at any value (the SDK dropped the parameters), so sampling parameters are not
sent: variations of a Claude candidate differ only in ``max_tokens``. The key travels as
``Authorization: Bearer``.
"""

from __future__ import annotations

import logging
from typing import Any

import anthropic

from orchestration.errors import ProviderError
from orchestration.providers.base import Completion, Provider, ProviderRequest, billed, iter_text_parts
from orchestration.providers.http_errors import ErrorTable, invalid_output, sdk_table, status_error

log = logging.getLogger(__name__)

#: Anthropic requires ``max_tokens``; used when the call's params leave it unset.
DEFAULT_MAX_TOKENS = 1024
TOOL_DESCRIPTION = "Record your answer as this tool's input, exactly matching its JSON schema."


def status_error_of(provider: str, e: anthropic.APIStatusError) -> ProviderError:
    """The mapped error of an HTTP error status (``overloaded_error`` bodies included)."""
    error_type = e.type if isinstance(e.type, str) else None
    text = e.api_message or (e.body if isinstance(e.body, str) else None)  # e.g. a proxy's HTML
    return status_error(
        provider, e.status_code, code=e.error_code or error_type, api_message=text,
        headers=e.response.headers, overloaded=error_type == "overloaded_error",
        request_id=e.request_id,
    )  # fmt: skip


ERROR_TABLE: ErrorTable = sdk_table(
    status=(anthropic.APIStatusError, status_error_of),
    timeout=anthropic.APITimeoutError,
    connection=anthropic.APIConnectionError,
    validation=anthropic.APIResponseValidationError,
    base=anthropic.AnthropicError,
)


class AnthropicProvider(Provider):
    """Claude via ``messages.create``; the forced tool's ``input`` is the structured answer."""

    error_table = ERROR_TABLE

    def __init__(self, name: str, model: str, *, api_key: str | None, base_url: str | None,
                 timeout_s: float) -> None:  # fmt: skip
        super().__init__(name, model, api_key=api_key, base_url=base_url, timeout_s=timeout_s)
        # max_retries=0: the orchestrator owns retries; explicit api_key: no env/profile lookup.
        self._client = anthropic.Anthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s
        )
        self._warned_sampling = False

    def close(self) -> None:
        """Close the SDK's connection pool."""
        self._client.close()

    def _complete(self, request: ProviderRequest, timeout: float) -> Completion:
        """One ``POST /v1/messages``; tool use when a schema is given, else text."""
        params = request.params
        if (params.temperature is not None or params.top_p is not None) and not self._warned_sampling:
            self._warned_sampling = True
            log.info("%s: Anthropic API 2026-10-21 rejects temperature/top_p; not sent", self.name)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens or DEFAULT_MAX_TOKENS,
            "system": request.system,
            "messages": [{"role": "user", "content": request.prompt}],
            "timeout": timeout,
        }
        if request.output_schema is not None:
            kwargs["tools"] = [{"name": request.tool_name, "description": TOOL_DESCRIPTION,
                                "input_schema": request.output_schema}]  # fmt: skip
            kwargs["tool_choice"] = {"type": "tool", "name": request.tool_name}
        message = self._client.messages.create(**kwargs)
        if not isinstance(message, anthropic.types.Message):
            raise invalid_output(self.name, f"unexpected response type {type(message).__name__}")
        usage = message.usage
        bill = billed(getattr(usage, "input_tokens", 0), getattr(usage, "output_tokens", 0),
                      message.model or self.model)  # fmt: skip
        if message.stop_reason == "refusal":
            raise invalid_output(self.name, "the model refused to answer", stop_reason="refusal", **bill)
        content: str | dict[str, Any]
        if request.output_schema is not None:
            content = self._tool_input(message, request.tool_name, bill)
        else:
            content = "".join(iter_text_parts(b for b in message.content or () if b.type == "text"))
            if not content:
                raise invalid_output(
                    self.name, "response has no text", stop_reason=message.stop_reason, **bill
                )
        return Completion(content=content, tokens_in=bill["tokens_in"], tokens_out=bill["tokens_out"],
                          model=bill["model"])  # fmt: skip

    def _tool_input(
        self, message: anthropic.types.Message, tool_name: str, bill: dict[str, Any]
    ) -> dict[str, Any]:
        """The ``input`` of the forced tool call, or :class:`InvalidOutputError` (with the usage)."""
        if message.stop_reason == "max_tokens":
            raise invalid_output(
                self.name, "tool input truncated at max_tokens", stop_reason="max_tokens", **bill
            )
        for block in message.content or ():
            if block.type == "tool_use" and block.name == tool_name:
                if not isinstance(block.input, dict):
                    raise invalid_output(self.name, "tool_use input is not a JSON object", **bill)
                return block.input
        raise invalid_output(
            self.name,
            f"response has no tool_use block for {tool_name!r}",
            stop_reason=message.stop_reason,
            **bill,
        )
