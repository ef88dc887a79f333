"""OpenAI (and any OpenAI-compatible server: vLLM, Ollama, llama.cpp, llama-cpp-python) through
the official ``openai`` SDK; structured output in the provider's mode (``structured_output``):
``json_schema`` (Structured Outputs), ``json_object`` with the schema attached, ``tools`` or the
prompt alone; ``auto`` falls back along them within one call when the server refuses a mode."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion

from orchestration.errors import ProviderError, UnsupportedModeError
from orchestration.providers.base import Completion, Provider, ProviderRequest, billed
from orchestration.providers.http_errors import (
    ErrorTable,
    invalid_output,
    sdk_table,
    short,
    status_error,
    timeout_error,
)
from orchestration.providers.output_modes import (
    LocalModeMemory,
    ModeMemory,
    OutputMode,
    StructuredOutput,
    is_mode_rejection,
    json_text,
    modes_to_try,
    request_fields,
    with_schema_instruction,
)

OpenAIKind = Literal["openai", "openai_compatible"]

log = logging.getLogger("quorum.providers.openai")


def _options(timeout: float) -> openai.RequestOptions:
    """The request options ``chat.completions.create`` sends: this call's timeout, bearer auth."""
    return {"timeout": timeout, "security": {"bearer_auth": True}}


def status_error_of(provider: str, e: openai.APIStatusError) -> ProviderError:
    """The mapped error of an HTTP error status (overloaded bodies included)."""
    body = e.body if isinstance(e.body, dict) else {}
    api_message = body.get("message") if body else (e.body if isinstance(e.body, str) else None)
    return status_error(
        provider, e.status_code, code=e.code or e.type, api_message=api_message,
        headers=e.response.headers, overloaded=e.type in ("overloaded_error", "server_overloaded"),
        request_id=e.request_id,
    )  # fmt: skip


ERROR_TABLE: ErrorTable = sdk_table(
    status=(openai.APIStatusError, status_error_of),
    timeout=openai.APITimeoutError,
    connection=openai.APIConnectionError,
    validation=openai.APIResponseValidationError,
    base=openai.OpenAIError,
)


class OpenAIProvider(Provider):
    """Chat Completions; ``kind="openai_compatible"`` targets a local server by ``base_url``."""

    error_table = ERROR_TABLE

    def __init__(self, name: str, model: str, *, api_key: str | None, base_url: str | None,
                 timeout_s: float, kind: OpenAIKind = "openai",
                 structured_output: StructuredOutput = "auto",
                 modes: ModeMemory | None = None) -> None:  # fmt: skip
        super().__init__(name, model, api_key=api_key, base_url=base_url, timeout_s=timeout_s)
        self.kind = kind
        self.structured_output: StructuredOutput = structured_output
        self._modes: ModeMemory = modes if modes is not None else LocalModeMemory()
        #: Which server a remembered mode is about: another URL or model is probed afresh.
        self.server = hashlib.sha256(f"{base_url}|{model}".encode()).hexdigest()[:16]
        # max_retries=0: the orchestrator owns retries. A local server ignores the key.
        self._client = openai.OpenAI(
            api_key=api_key or "not-needed", base_url=base_url, max_retries=0, timeout=timeout_s
        )

    def close(self) -> None:
        """Close the SDK's connection pool."""
        self._client.close()

    def _complete(self, request: ProviderRequest, timeout: float) -> Completion:
        """One ``POST /v1/chat/completions`` per mode tried; free text when there is no schema."""
        if request.output_schema is None:
            return self._chat(self._base_body(request, request.system), timeout, None)
        auto = self.structured_output == "auto"
        remembered = self._modes.recall(self.name, self.server) if auto else None
        deadline = time.monotonic() + timeout
        refused: list[tuple[OutputMode, openai.APIStatusError]] = []
        for mode in modes_to_try(self.structured_output, remembered):
            left = deadline - time.monotonic()
            if left <= 0:
                raise timeout_error(self.name)
            try:
                done = self._structured(request, mode, left)
            except openai.APIStatusError as e:
                if not is_mode_rejection(mode, e.status_code, f"{e.message} {json.dumps(e.body)}"):
                    raise
                log.info("%s: the server refused structured output mode %s (HTTP %s)",
                         self.name, mode, e.status_code)  # fmt: skip
                refused.append((mode, e))
                continue
            if auto and mode != remembered:
                log.info("%s: structured output mode %s works; remembered", self.name, mode)
                self._modes.remember(self.name, self.server, mode)
            return done
        mode, last = refused[-1]
        raise UnsupportedModeError(
            f"{self.name}: the server refused structured output mode "
            f"{', '.join(m for m, _ in refused)} (last: HTTP {last.status_code}: {short(last.message, 160)})",
            provider=self.name, status=last.status_code, modes=[m for m, _ in refused],
        ) from last  # fmt: skip

    def _base_body(self, request: ProviderRequest, system: str) -> dict[str, Any]:
        """Model, messages and sampling parameters of one request body."""
        params = request.params
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": request.prompt}],
        }
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.max_tokens is not None:
            # OpenAI deprecated max_tokens (reasoning models reject it); local servers know max_tokens.
            key = "max_completion_tokens" if self.kind == "openai" else "max_tokens"
            body[key] = params.max_tokens
        return body

    def _structured(self, request: ProviderRequest, mode: OutputMode, timeout: float) -> Completion:
        """Ask for ``request.output_schema`` in ``mode``; the answer's JSON text as content."""
        schema = request.output_schema
        assert schema is not None
        # Modes whose server may not enforce the schema carry it in the system message too.
        enforced = mode in ("json_schema", "tools")
        system = request.system if enforced else with_schema_instruction(request.system, schema)
        body = self._base_body(request, system) | request_fields(mode, schema, request.tool_name)
        return self._chat(body, timeout, mode)

    def _chat(self, body: dict[str, Any], timeout: float, mode: OutputMode | None) -> Completion:
        """Send one request; check the answer; read its content (or tool arguments) and usage.

        Sent with the client's ``post`` (its documented way to send a body as is): the body is
        plain JSON built here, and ``chat.completions.create`` would walk it against the SDK's
        TypedDict annotations (``maybe_transform``: half a millisecond per call, a sixth of the
        call's CPU) only to rename no key. Auth, headers, timeout, error mapping and the
        ``ChatCompletion`` parsing are the SDK's own, as with ``create``."""
        completion = self._client.post(
            "/chat/completions", body=body, cast_to=ChatCompletion, options=_options(timeout)
        )
        if not isinstance(completion, ChatCompletion):
            raise invalid_output(self.name, f"unexpected response type {type(completion).__name__}")
        usage = completion.usage  # billed even when the answer below turns out unusable
        bill = billed(getattr(usage, "prompt_tokens", 0), getattr(usage, "completion_tokens", 0),
                      completion.model or self.model)  # fmt: skip
        if not completion.choices:
            raise invalid_output(self.name, "response has no choices", **bill)
        choice = completion.choices[0]
        message = choice.message
        if message is None:
            raise invalid_output(
                self.name, "response has no message", finish_reason=choice.finish_reason, **bill
            )
        if getattr(message, "refusal", None):
            raise invalid_output(self.name, f"the model refused: {short(message.refusal, 120)}",
                                 finish_reason=choice.finish_reason, **bill)  # fmt: skip
        if choice.finish_reason == "content_filter":
            raise invalid_output(self.name, "answer withheld by the content filter",
                                 finish_reason="content_filter", **bill)  # fmt: skip
        if mode is not None and choice.finish_reason == "length":
            raise invalid_output(self.name, "structured answer truncated at max_tokens",
                                 finish_reason="length", **bill)  # fmt: skip
        content = message.content
        calls = getattr(message, "tool_calls", None) or []
        if mode == "tools" and calls and getattr(calls[0], "function", None) is not None:
            content = calls[0].function.arguments
        if not content:
            raise invalid_output(
                self.name, "response has no content", finish_reason=choice.finish_reason, **bill
            )
        if mode in ("json_object", "prompt"):
            content = json_text(content)
        return Completion(content=content, tokens_in=bill["tokens_in"], tokens_out=bill["tokens_out"],
                          model=bill["model"])  # fmt: skip
