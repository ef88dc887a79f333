"""One error hierarchy for Quorum: every provider error is mapped into it at the SDK boundary.

``str(error)`` is the human message, wherever the error ends up: each error's ``args`` is just
``(message,)``, so Celery's JSON result backend (which stores ``exc.args`` and rebuilds
``cls(*args)``, as a stand-in class of the same name when Quorum is not installed) gives a
producer without Quorum an exception whose ``str()`` is the message. The operator facts live in
``details`` (JSON-safe) and as typed attributes (``provider``, ``status``, ``retry_after``,
``field``, ``reason``, ``code``, ``attempts``); they travel by pickle (``__reduce__``), by
:meth:`QuorumError.to_dict` / :func:`error_from_dict`, and for a failed job beside its result
(``workers.job_errors``: the ``<job_id>:error`` result any Celery producer can read).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

#: Who an error is held against (docs/operations.md, "What counts against a provider"):
#: ``provider`` — an outage (breaker and health errors); ``quality`` — the provider answered but
#: the answer was unusable (health's invalid-output figure and consensus weight, not the
#: breaker); ``request`` — the job itself was at fault (neither breaker nor health);
#: ``none`` — nobody (skipped, the job's deadline, this worker's own configuration).
Blame = Literal["provider", "quality", "request", "none"]


class QuorumError(Exception):
    """Base of every error Quorum raises; carries a message and JSON-safe details."""

    #: Whether the failover chain should move on to the next provider after this error.
    retryable: ClassVar[bool] = False
    #: Whether the circuit breaker counts this error as a provider failure.
    counts_for_breaker: ClassVar[bool] = True
    #: Who the error is held against in health figures (see :data:`Blame`).
    blame: ClassVar[Blame] = "provider"

    def __init__(self, message: str = "", details: dict[str, Any] | None = None, **fields: Any) -> None:
        merged = {**(details or {}), **{k: v for k, v in fields.items() if v is not None}}
        super().__init__(message)  # args == (message,): what Celery's JSON backend stores
        self.message = message
        self.details = merged

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.details)

    def _detail(self, name: str) -> Any:
        return self.details.get(name)

    @property
    def provider(self) -> str | None:
        """The provider the error is about (None for job-level errors)."""
        return self._detail("provider")

    @property
    def status(self) -> int | None:
        """The HTTP status the provider answered, when it answered with one."""
        return self._detail("status")

    @property
    def retry_after(self) -> float | None:
        """Seconds the provider asked us to wait (rate limits), when it said."""
        return self._detail("retry_after")

    @property
    def field(self) -> str | None:
        """The request field at fault (``InvalidRequestError``), e.g. ``providers``."""
        return self._detail("field")

    @property
    def reason(self) -> str | None:
        """A short machine-readable reason (``missing_key``, a skip's cause...)."""
        return self._detail("reason")

    @property
    def code(self) -> str | None:
        """The provider's own error code or type, when it gave one."""
        return self._detail("code")

    @property
    def request_id(self) -> str | None:
        """The provider's request id, for its support desk."""
        return self._detail("request_id")

    @property
    def attempts(self) -> list[dict[str, Any]]:
        """Per-attempt summaries of a failed job (provider, error, message, latency, cost)."""
        value = self._detail("attempts")
        return value if isinstance(value, list) else []

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
    blame = "request"


class ConfigError(QuorumError):
    """The configuration is invalid; names the key and the reason."""

    counts_for_breaker = False
    blame = "none"


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
    blame = "request"


class UnsupportedModeError(BadRequestError):
    """The server refused the structured-output mode (e.g. ``response_format``), not the job."""

    @property
    def modes(self) -> list[str]:
        """The structured-output modes the server refused, in the order they were tried."""
        value = self._detail("modes")
        return value if isinstance(value, list) else []


class InvalidOutputError(ProviderError):
    """The provider answered, but the JSON was malformed or failed the schema.

    A quality figure, not an outage: it lowers the provider's consensus weight and shows in
    health as its invalid-output rate, but never opens the availability breaker. ``tokens_in``
    and ``tokens_out`` carry the usage the server reported (billed all the same).
    """

    counts_for_breaker = False
    blame = "quality"


class ProviderUnavailableError(ProviderError):
    """The provider was skipped without a call: breaker open, budget spent or rate limited."""

    counts_for_breaker = False
    blame = "none"


# --------------------------------------------------------------------------- job outcomes


class AllProvidersFailedError(QuorumError):
    """Every provider in the failover chain failed; ``attempts`` lists each one."""


class NoHealthyProvidersError(QuorumError):
    """No provider could even be tried (all breakers open, budgets spent, or none enabled)."""


class OrchestrationTimeoutError(QuorumError):
    """The job's absolute deadline passed before an answer was ready (not a provider fault)."""

    counts_for_breaker = False
    blame = "none"


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


def blame_of(error_kind: str) -> Blame:
    """Who an error kind (class name) is held against; unknown kinds blame the provider."""
    cls = ERROR_TYPES.get(error_kind)
    return "provider" if cls is None else cls.blame
