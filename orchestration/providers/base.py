"""The provider interface: one abstract method per vendor, errors mapped in one place.

A :class:`Provider` turns a :class:`ProviderRequest` into a :class:`Completion` through its
official SDK (``_complete``); the shared :meth:`Provider.call` validates before any HTTP call,
times the call, maps every SDK exception into :mod:`orchestration.errors` (its ``error_table``),
scrubs secrets from messages and parses structured output against the schema.

Usage is counted whatever happens to the answer: an :class:`InvalidOutputError` raised after
the server answered carries ``tokens_in``/``tokens_out``/``model`` in its details (parse
failures here; adapters pass :func:`billed` to their post-response checks).
"""

from __future__ import annotations

import dataclasses
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from orchestration.errors import InvalidRequestError, ProviderError, QuorumError
from orchestration.models import ProviderResult, SamplingParams, _check_text
from orchestration.prompts import (
    EXTRACTION_SYSTEM,
    GENERATION_SYSTEM,
    TOOL_NAME,
    extraction_prompt,
)
from orchestration.providers.http_errors import ErrorTable, mapped_errors
from orchestration.schemas import check_json_schema, output_schema, parse_output


@dataclass(frozen=True)
class ProviderRequest:
    """What one provider call sends: a system and user message, optionally a JSON schema."""

    system: str
    prompt: str
    params: SamplingParams = field(default_factory=SamplingParams)
    #: The schema the structured output must satisfy (already wrapped by ``output_schema``);
    #: ``None`` asks for free text.
    output_schema: dict[str, Any] | None = None
    tool_name: str = TOOL_NAME


@dataclass(frozen=True)
class Completion:
    """What the SDK returned, before parsing: structured data or text, plus usage."""

    content: str | dict[str, Any]
    tokens_in: int
    tokens_out: int
    model: str


def billed(tokens_in: Any, tokens_out: Any, model: Any) -> dict[str, Any]:
    """The usage a server reported, as error details (so a failed answer's tokens are counted)."""
    return {"tokens_in": int(tokens_in or 0), "tokens_out": int(tokens_out or 0), "model": str(model or "")}


def _with_usage(error: QuorumError, result: ProviderResult) -> QuorumError:
    """``error`` with the usage of the call that produced ``result`` added to its details."""
    usage = billed(result.tokens_in, result.tokens_out, result.model)
    return error.with_details(**usage)


class Provider(ABC):
    """One configured provider behind its official SDK. Thread-safe; build once per process."""

    #: Output-token cap sent when a call's params leave ``max_tokens`` unset (the config's
    #: ``max_tokens``, set by the registry); None sends none.
    max_tokens: int | None = None

    def __init__(
        self, name: str, model: str, *, api_key: str | None, base_url: str | None, timeout_s: float
    ) -> None:
        self.name = name
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._secrets = tuple(s for s in (api_key,) if s)

    # -- what a vendor module provides -------------------------------------------

    @abstractmethod
    def _complete(self, request: ProviderRequest, timeout: float) -> Completion:
        """Send ``request`` through the SDK with ``timeout`` seconds; let SDK errors escape."""

    #: How this vendor's SDK exceptions map into :mod:`orchestration.errors`.
    error_table: ClassVar[ErrorTable]

    # -- shared behaviour ------------------------------------------------------------------

    def call(self, request: ProviderRequest, timeout: float | None = None) -> ProviderResult:
        """One free-text HTTP call; the answer is in ``result.text``."""
        result, content = self._send(request, timeout)
        result.text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        return result

    def _send(
        self, request: ProviderRequest, timeout: float | None
    ) -> tuple[ProviderResult, str | dict[str, Any]]:
        """Time one SDK call, map and scrub its errors; return the result and raw content."""
        timeout = self.timeout_s if timeout is None else timeout
        if not timeout > 0:
            raise InvalidRequestError(f"timeout must be positive, got {timeout}", provider=self.name)
        if request.params.max_tokens is None and self.max_tokens is not None:
            capped = request.params.model_copy(update={"max_tokens": self.max_tokens})
            request = dataclasses.replace(request, params=capped)
        start = time.perf_counter()
        try:
            with mapped_errors(self.name, self.error_table):
                done = self._complete(request, timeout)
        except ProviderError as e:
            raise self._scrubbed(e) from None
        result = ProviderResult(
            provider=self.name,
            model=done.model or self.model,
            params=request.params,
            tokens_in=done.tokens_in,
            tokens_out=done.tokens_out,
            latency_ms=(time.perf_counter() - start) * 1000,
        )
        return result, done.content

    def extract(
        self, text: str, schema: dict[str, Any], params: SamplingParams, timeout: float | None = None
    ) -> ProviderResult:
        """Structured extraction of ``schema``'s fields from ``text``; validated before HTTP."""
        try:
            _check_text(text)
        except ValueError as e:
            raise InvalidRequestError(str(e), field="text", provider=self.name) from None
        check_json_schema(schema)
        request = ProviderRequest(
            system=EXTRACTION_SYSTEM,
            prompt=extraction_prompt(text, schema),
            params=params,
            output_schema=output_schema(schema),
        )
        result, content = self._send(request, timeout)
        try:
            result.fields, result.notes = parse_output(content, schema, self.name)
        except QuorumError as e:
            raise _with_usage(e, result) from None
        except Exception as e:  # validation itself broke on a well-formed answer: the job's schema
            refused = InvalidRequestError(
                f"the job's json_schema cannot be applied to an answer ({type(e).__name__})",
                field="json_schema",
                provider=self.name,
            )
            raise _with_usage(refused, result) from None
        return result

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        *,
        system: str = GENERATION_SYSTEM,
        timeout: float | None = None,
    ) -> ProviderResult:
        """Free-text generation; ``result.text`` holds the answer."""
        if not prompt.strip():
            raise InvalidRequestError("prompt is empty", field="prompt", provider=self.name)
        return self.call(ProviderRequest(system=system, prompt=prompt, params=params), timeout)

    def scrub(self, text: str) -> str:
        """Remove this provider's secrets from ``text``."""
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def _scrubbed(self, e: ProviderError) -> ProviderError:
        details = {k: self.scrub(v) if isinstance(v, str) else v for k, v in e.details.items()}
        details.setdefault("provider", self.name)
        return type(e)(self.scrub(e.message), details)


def iter_text_parts(parts: Any) -> Iterator[str]:
    """Yield the text of SDK content parts that have any (helper for vendor modules)."""
    for part in parts or ():
        text = getattr(part, "text", None)
        if text:
            yield text
