"""One error hierarchy for Quorum: every provider error is mapped into it at the SDK boundary.

Every error is picklable *and* survives Celery's JSON result backend, which stores
``exc.args`` and rebuilds the exception as ``cls(*args)``. So each error keeps exactly two
args: the human message and a JSON-safe dict of operator facts (provider, status,
retry-after, attempts, ...). A producer that does not import Quorum still gets the message.
"""

from __future__ import annotations

from typing import Any, ClassVar


class QuorumError(Exception):
    """Base of every error Quorum raises; carries a message and JSON-safe details."""

    #: Whether the failover chain should move on to the next provider after this error.
    retryable: ClassVar[bool] = False
    #: Whether the circuit breaker counts this error as a provider failure.
    counts_for_breaker: ClassVar[bool] = True

    def __init__(self, message: str = "", details: dict[str, Any] | None = None, **fields: Any) -> None:
        merged = {**(details or {}), **{k: v for k, v in fields.items() if v is not None}}
        super().__init__(message, merged)
        self.message = message
        self.details = merged

    def __str__(self) -> str:
        return self.message

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes that are not set: expose details as attributes.
        details = self.__dict__.get("details", {})
        if name in details:
            return details[name]
        if name in {"provider", "status", "retry_after"}:
            return None
        raise AttributeError(name)

    @property
    def kind(self) -> str:
        """Stable short name of the error class (used in health counters and results)."""
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description for results, logs and Redis."""
        return {"type": self.kind, "message": self.message, **self.details}


# --------------------------------------------------------------------------- request & config


class InvalidRequestError(QuorumError):
    """The job itself is malformed; retrying with another provider cannot help."""

    counts_for_breaker = False


class ConfigError(QuorumError):
    """The configuration is invalid; names the key and the reason."""

    counts_for_breaker = False


# --------------------------------------------------------------------------- provider errors


class ProviderError(QuorumError):
    """A provider call failed. ``provider``, ``status`` and ``retry_after`` are in details."""

    retryable = True


class RateLimitedError(ProviderError):
    """HTTP 429: the provider asked us to slow down (``retry_after`` seconds when it said)."""


class ProviderTimeoutError(ProviderError):
    """The call did not finish within its timeout."""


class ProviderConnectionError(ProviderError):
    """The connection failed or was reset before a response arrived."""


class ServerError(ProviderError):
    """HTTP 5xx from the provider."""


class OverloadedError(ServerError):
    """The provider said it is overloaded (Anthropic 529, HTTP 503)."""


class AuthError(ProviderError):
    """HTTP 401/403: the key is missing, wrong or lacks permission. Opens the breaker at once."""


class BadRequestError(ProviderError):
    """HTTP 400-class: the provider refused this request; does not count against its health."""

    counts_for_breaker = False


class UnsupportedModeError(BadRequestError):
    """The server refused the structured-output mode (e.g. ``response_format``), not the job."""


class InvalidOutputError(ProviderError):
    """The provider answered, but the JSON was malformed or failed the schema."""


class ProviderUnavailableError(ProviderError):
    """The provider was skipped without a call: breaker open, budget spent or rate limited."""

    counts_for_breaker = False


# --------------------------------------------------------------------------- job outcomes


class AllProvidersFailedError(QuorumError):
    """Every provider in the failover chain failed; ``attempts`` lists each one."""


class NoHealthyProvidersError(QuorumError):
    """No provider could even be tried (all breakers open, budgets spent, or none enabled)."""


class OrchestrationTimeoutError(QuorumError):
    """The job's absolute deadline passed before an answer was ready (not a provider fault)."""

    counts_for_breaker = False


class InsufficientResponsesError(QuorumError):
    """A consensus/best-match job got fewer than ``min_responses`` usable answers."""


ERROR_TYPES: dict[str, type[QuorumError]] = {
    cls.__name__: cls
    for cls in (
        QuorumError,
        InvalidRequestError,
        ConfigError,
        ProviderError,
        RateLimitedError,
        ProviderTimeoutError,
        ProviderConnectionError,
        ServerError,
        OverloadedError,
        AuthError,
        BadRequestError,
        UnsupportedModeError,
        InvalidOutputError,
        ProviderUnavailableError,
        AllProvidersFailedError,
        NoHealthyProvidersError,
        OrchestrationTimeoutError,
        InsufficientResponsesError,
    )
}


def error_from_dict(data: dict[str, Any]) -> QuorumError:
    """Rebuild an error from :meth:`QuorumError.to_dict` output (unknown types → QuorumError)."""
    fields = dict(data)
    cls = ERROR_TYPES.get(str(fields.pop("type", "")), QuorumError)
    message = str(fields.pop("message", ""))
    return cls(message, fields)
