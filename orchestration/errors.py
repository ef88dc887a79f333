"""One error hierarchy for Quorum: every provider error is mapped into it at the SDK boundary.

``str(error)`` is the human message, wherever the error ends up: each error's ``args`` is just
``(message,)``, so Celery's JSON result backend (which stores ``exc.args`` and rebuilds
``cls(*args)``, as a stand-in class of the same name when Quorum is not installed) gives a
producer without Quorum an exception whose ``str()`` is the message. The operator facts are
typed attributes (``provider``, ``status``, ``retry_after``, ``field``, ``reason``, ``code``,
``attempts``...), seen together as the JSON-safe ``details``; they travel by pickle
(``__reduce__``), by
:meth:`QuorumError.to_dict` / :func:`error_from_dict`, and for a failed job beside its result
(``workers.job_errors``: the ``<job_id>:error`` result any Celery producer can read).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

#: Who an error is held against (docs/operations.md, "What counts against a provider"):
#: ``provider`` — an outage (breaker and health errors); ``quality`` — the provider answered but
#: the answer was unusable (health's invalid-output figure and consensus weight, not the
#: breaker); ``request`` — the job itself was at fault (neither breaker nor health);
#: ``none`` — nobody (skipped, the job's deadline, this worker's own configuration).
Blame = Literal["provider", "quality", "request", "none"]


class QuorumError(Exception):
    """Base of every error Quorum raises: a message plus typed, JSON-safe fields.

    Every field is optional; ``details`` is the JSON-safe view of those that are set (plus any
    field this version does not know, kept as read so that nothing a newer worker wrote is lost).
    """

    #: Whether the circuit breaker counts this error as a provider failure.
    counts_for_breaker: ClassVar[bool] = True
    #: Who the error is held against in health figures (see :data:`Blame`).
    blame: ClassVar[Blame] = "provider"

    #: The provider the error is about (None for job-level errors).
    provider: str | None
    #: The HTTP status the provider answered, when it answered with one.
    status: int | None
    #: Seconds the provider asked us to wait (rate limits), when it said.
    retry_after: float | None
    #: The request field at fault (``InvalidRequestError``), e.g. ``providers``.
    field: str | None
    #: A short machine-readable reason (``missing_key``, a skip's cause...).
    reason: str | None
    #: The provider's own error code or type, when it gave one.
    code: str | None
    #: The provider's request id, for its support desk.
    request_id: str | None
    #: The environment variable a missing API key is read from (``reason == "missing_key"``).
    key_env: str | None
    #: The model that answered (a failed answer's usage is billed to it).
    model: str | None
    #: Tokens the server reported for a failed call (billed all the same).
    tokens_in: int | None
    tokens_out: int | None
    #: The job a job-level error ends.
    job_id: str | None
    #: The answers a consensus/best-match job needed (``InsufficientResponsesError``).
    min_responses: int | None
    #: Per-attempt summaries of a failed job (provider, error, message, latency, cost).
    attempts: list[dict[str, Any]]
    #: The failed provider call's outcome (an ``Attempt`` as JSON), set by the task that ran it.
    attempt: dict[str, Any] | None
    #: The structured-output modes a server refused, in the order they were tried.
    modes: list[str]
    #: Fields this version does not know (from :func:`error_from_dict` or a newer worker).
    extra: dict[str, Any]

    def __init__(self, message: str = "", details: Mapping[str, Any] | None = None, **fields: Any) -> None:
        super().__init__(message)  # args == (message,): what Celery's JSON backend stores
        self.message = message
        merged = {k: v for k, v in {**(details or {}), **fields}.items() if v is not None}
        for name in _FIELDS:
            setattr(self, name, merged.pop(name, None))
        self.attempts = list(self.attempts or [])
        self.modes = list(self.modes or [])
        self.extra = merged

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message, self.details)

    @property
    def details(self) -> dict[str, Any]:
        """The fields that are set, JSON-safe (a fresh dict: set the typed attributes instead)."""
        fields = ((name, getattr(self, name)) for name in _FIELDS)
        return {**{k: v for k, v in fields if v is not None and v != []}, **self.extra}

    @property
    def kind(self) -> str:
        """Stable short name of the error class (used in health counters and results)."""
        return type(self).__name__

    def with_details(self, **fields: Any) -> Self:
        """A copy of this error (same class and message) with ``fields`` set as well."""
        return type(self)(self.message, {**self.details, **fields})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description for results, logs and Redis."""
        return {"type": self.kind, "message": self.message, **self.details}


#: The typed fields, as declared on :class:`QuorumError` (its class-level flags and ``extra`` aside).
_FIELDS = tuple(
    name for name, kind in QuorumError.__annotations__.items() if "ClassVar" not in kind and name != "extra"
)


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
    """A provider call failed (``provider``, and ``status``/``retry_after`` when it answered)."""


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
    """The server refused the structured-output mode (e.g. ``response_format``), not the job;
    ``modes`` lists the modes it refused."""


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


class RedisUnavailableError(QuorumError):
    """Redis (broker, results and shared state) stayed unreachable for longer than workers ride
    out (their outage grace) while the job was under way: not a provider's fault, nor the
    job's; send it again once Redis is back."""

    counts_for_breaker = False
    blame = "none"


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
        RedisUnavailableError,
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
