"""OpenAI (and any OpenAI-compatible server: vLLM, Ollama, llama.cpp) through the official
``openai`` SDK; structured output by Structured Outputs (``response_format`` ``json_schema``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion

from orchestration.errors import ProviderError
from orchestration.providers.base import Completion, Provider, ProviderRequest, billed
from orchestration.providers.http_errors import (
    MALFORMED_EXCEPTIONS,
    connection_error,
    invalid_output,
    malformed_error,
    short,
    status_error,
    timeout_error,
)

OpenAIKind = Literal["openai", "openai_compatible"]


class OpenAIProvider(Provider):
    """Chat Completions; ``kind="openai_compatible"`` targets a local server by ``base_url``."""

    def __init__(self, name: str, model: str, *, api_key: str | None, base_url: str | None,
                 timeout_s: float, kind: OpenAIKind = "openai") -> None:  # fmt: skip
        super().__init__(name, model, api_key=api_key, base_url=base_url, timeout_s=timeout_s)
        self.kind = kind
        # max_retries=0: the orchestrator owns retries. A local server ignores the key.
        self._client = openai.OpenAI(
            api_key=api_key or "not-needed", base_url=base_url, max_retries=0, timeout=timeout_s
        )

    def close(self) -> None:
        """Close the SDK's connection pool."""
        self._client.close()

    def _complete(self, request: ProviderRequest, timeout: float) -> Completion:
        """One ``POST /v1/chat/completions``; ``json_schema`` response format when a schema is given."""
        params = request.params
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.prompt},
            ],
            "timeout": timeout,
        }
        if params.temperature is not None:
            kwargs["temperature"] = params.temperature
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        if params.max_tokens is not None:
            # OpenAI deprecated max_tokens (reasoning models reject it); local servers know max_tokens.
            key = "max_completion_tokens" if self.kind == "openai" else "max_tokens"
            kwargs[key] = params.max_tokens
        if request.output_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.tool_name, "schema": request.output_schema, "strict": True},
            }
        completion = self._client.chat.completions.create(**kwargs)
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
        if request.output_schema is not None and choice.finish_reason == "length":
            raise invalid_output(self.name, "structured answer truncated at max_tokens",
                                 finish_reason="length", **bill)  # fmt: skip
        if not message.content:
            raise invalid_output(
                self.name, "response has no content", finish_reason=choice.finish_reason, **bill
            )
        return Completion(content=message.content, tokens_in=bill["tokens_in"], tokens_out=bill["tokens_out"],
                          model=bill["model"])  # fmt: skip

    @contextmanager
    def _map_errors(self) -> Iterator[None]:
        """Map every ``openai`` exception (and a non-JSON body) into :mod:`orchestration.errors`."""
        try:
            yield
        except ProviderError:
            raise
        except openai.APIStatusError as e:
            body = e.body if isinstance(e.body, dict) else {}
            api_message = body.get("message") if body else (e.body if isinstance(e.body, str) else None)
            raise status_error(
                self.name, e.status_code, code=e.code or e.type, api_message=api_message,
                headers=e.response.headers, overloaded=e.type in ("overloaded_error", "server_overloaded"),
                request_id=e.request_id,
            ) from e  # fmt: skip
        except openai.APITimeoutError as e:
            raise timeout_error(self.name) from e
        except openai.APIConnectionError as e:
            raise connection_error(self.name, e.__cause__) from e
        except openai.APIResponseValidationError as e:
            raise invalid_output(self.name, f"response failed the SDK's validation: {short(e, 120)}") from e
        except MALFORMED_EXCEPTIONS as e:
            raise malformed_error(self.name, e) from e
        except openai.OpenAIError as e:
            raise ProviderError(f"{self.name}: {type(e).__name__}: {short(e)}", provider=self.name) from e
