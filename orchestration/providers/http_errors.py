"""The one SDK-error mapping of every vendor adapter: :func:`mapped_errors` re-raises what an SDK
raised through the vendor's :data:`ErrorTable` (exception class → Quorum error), built from the
shared pieces here (HTTP status → error class, ``Retry-After`` parsing, transport exceptions), so
the three adapters map alike."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import httpx2

from orchestration.errors import (
    AuthError,
    BadRequestError,
    InvalidOutputError,
    OverloadedError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
)

#: How one SDK exception becomes a Quorum error: ``(exception classes, mapper)``; the mapper gets
#: the provider's name and the exception and returns the error to raise (None: not ours, re-raise).
ErrorRow = tuple[
    type[BaseException] | tuple[type[BaseException], ...], Callable[[str, Any], ProviderError | None]
]
#: A vendor's rows, most specific first: the first row whose classes match decides.
ErrorTable = Sequence[ErrorRow]

#: Longest API message kept in an error message (bodies can be long; keep logs readable).
MAX_MESSAGE_CHARS = 300

#: Transport-level timeouts of both HTTP stacks the SDKs may use (httpx2 today, httpx before).
_TIMEOUT_EXCEPTIONS: tuple[type[BaseException], ...] = (httpx2.TimeoutException, httpx.TimeoutException)
#: Transport failures that are not timeouts: refused, reset, TLS, truncated responses.
_CONNECTION_EXCEPTIONS: tuple[type[BaseException], ...] = (
    httpx2.TransportError,
    httpx.TransportError,
    ssl.SSLError,
    ConnectionError,
)
#: A response body that is not JSON (the SDKs parse 200 bodies outside their error handling).
MALFORMED_EXCEPTIONS: tuple[type[BaseException], ...] = (json.JSONDecodeError, UnicodeDecodeError)


def class_for_status(status: int, *, overloaded: bool = False) -> type[ProviderError]:
    """The error class of an HTTP error status (``overloaded`` when the body says so)."""
    if status == 429:
        return RateLimitedError
    if overloaded or status in (503, 529):
        return OverloadedError
    if status >= 500:
        return ServerError
    if status in (401, 402, 403):  # 402: billing; every further call fails the same way
        return AuthError
    if status == 408:
        return ProviderTimeoutError
    return BadRequestError


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000
            if value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
        return value if value >= 0 else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def short(text: Any, limit: int = MAX_MESSAGE_CHARS) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def status_error(
    provider: str,
    status: int,
    *,
    code: str | None,
    api_message: str | None,
    headers: Mapping[str, str] | None = None,
    overloaded: bool = False,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> ProviderError:
    """A mapped error for an HTTP error response: ``"openai: HTTP 429 rate_limit_exceeded: ..."``."""
    cls = class_for_status(status, overloaded=overloaded)
    if retry_after is None:
        retry_after = parse_retry_after(headers)
    head = f"{provider}: HTTP {status}" + (f" {code}" if code else "")
    message = f"{head}: {short(api_message)}" if api_message else head
    return cls(message, provider=provider, status=status, retry_after=retry_after, code=code,
               request_id=request_id)  # fmt: skip


def timeout_error(provider: str) -> ProviderTimeoutError:
    """The call did not finish within its timeout."""
    return ProviderTimeoutError(f"{provider}: request timed out", provider=provider)


def _connection_error(provider: str, exc: BaseException | None) -> ProviderConnectionError:
    """The connection failed or was reset; names the underlying exception, never its URL."""
    what = type(exc).__name__ if exc is not None else "unknown"
    return ProviderConnectionError(f"{provider}: connection failed ({what})", provider=provider)


def transport_error(provider: str, exc: BaseException) -> ProviderError | None:
    """A timeout or connection error for a raw transport exception (None if it is neither)."""
    if isinstance(exc, _TIMEOUT_EXCEPTIONS):
        return timeout_error(provider)
    if isinstance(exc, _CONNECTION_EXCEPTIONS):
        return _connection_error(provider, exc)
    return None


def malformed_error(provider: str, exc: BaseException) -> InvalidOutputError:
    """The provider answered with a body that is not JSON at all."""
    return InvalidOutputError(
        f"{provider}: response body is not valid JSON ({short(exc, 120)})", provider=provider
    )


def invalid_output(provider: str, what: str, **fields: Any) -> InvalidOutputError:
    """The provider answered 200 but the answer is unusable (no tool call, refusal, empty)."""
    return InvalidOutputError(f"{provider}: {what}", provider=provider, **fields)


def validation_error(provider: str, exc: BaseException) -> InvalidOutputError:
    """The SDK could not validate the response it received."""
    return invalid_output(provider, f"response failed the SDK's validation: {short(exc, 120)}")


def _unexpected_error(provider: str, exc: BaseException) -> ProviderError:
    """Any other exception of the SDK's own hierarchy."""
    return ProviderError(f"{provider}: {type(exc).__name__}: {short(exc)}", provider=provider)


def sdk_table(
    *,
    status: tuple[type[BaseException], Callable[[str, Any], ProviderError]],
    timeout: type[BaseException],
    connection: type[BaseException],
    validation: type[BaseException],
    base: type[BaseException],
) -> ErrorTable:
    """The table of an SDK built like OpenAI's and Anthropic's (status, timeout, connection and
    validation errors under one base class), in the order those classes must be tried."""
    return (
        status,
        (timeout, lambda provider, _e: timeout_error(provider)),
        (connection, lambda provider, e: _connection_error(provider, e.__cause__)),
        (validation, validation_error),
        (MALFORMED_EXCEPTIONS, malformed_error),
        (base, _unexpected_error),
    )


@contextmanager
def mapped_errors(provider: str, table: ErrorTable) -> Iterator[None]:
    """Re-raise an exception of the block as the error its first matching row of ``table`` maps
    it to (``raise ... from e``); Quorum's own errors and unmatched exceptions pass unchanged."""
    try:
        yield
    except ProviderError:
        raise
    except Exception as e:
        for classes, mapper in table:
            if isinstance(e, classes):
                mapped = mapper(provider, e)
                if mapped is not None:
                    raise mapped from e
                break
        raise
