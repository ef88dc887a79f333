"""The error hierarchy survives every way an error travels: pickle, JSON args, Celery's own
exception serialisation, and ``to_dict``/``error_from_dict`` (results, Redis)."""

from __future__ import annotations

import json
import pickle

import pytest
from celery import Celery

from orchestration.errors import (
    ERROR_TYPES,
    AllProvidersFailedError,
    AuthError,
    BadRequestError,
    InvalidRequestError,
    OverloadedError,
    ProviderError,
    QuorumError,
    RateLimitedError,
    RedisUnavailableError,
    ServerError,
    error_from_dict,
)
from orchestration.providers.gemini import _api_key_invalid, retry_info_delay
from orchestration.providers.http_errors import class_for_status, parse_retry_after

ALL = sorted(ERROR_TYPES.items())


def _sample(cls: type[QuorumError]) -> QuorumError:
    return cls(
        f"{cls.__name__}: something failed",
        provider="openai",
        status=503,
        retry_after=2.5,
        attempts=[{"provider": "openai", "error": {"type": "ServerError"}}],
    )


def _same(a: QuorumError, b: QuorumError) -> None:
    assert type(a) is type(b)
    assert str(a) == str(b)
    assert a.details == b.details
    assert a.args == b.args


@pytest.mark.parametrize(("name", "cls"), ALL)
def test_pickle_round_trip(name: str, cls: type[QuorumError]) -> None:
    e = _sample(cls)
    _same(e, pickle.loads(pickle.dumps(e)))


@pytest.mark.parametrize(("name", "cls"), ALL)
def test_args_are_the_message_alone(name: str, cls: type[QuorumError]) -> None:
    e = _sample(cls)
    assert e.args == (str(e),)
    back = type(e)(*json.loads(json.dumps(e.args)))
    assert type(back) is type(e) and str(back) == str(e)


@pytest.fixture(scope="module")
def backend():
    app = Celery("test-errors", set_as_current=False)
    app.conf.result_backend = "cache+memory://"
    app.conf.result_serializer = "json"
    return app.backend


@pytest.mark.parametrize(("name", "cls"), ALL)
def test_celery_backend_round_trip(backend, name: str, cls: type[QuorumError]) -> None:
    """What a producer with Quorum installed gets from ``AsyncResult.get()`` on the JSON backend:
    the same class and message (the details travel in the job's error payload)."""
    e = _sample(cls)
    stored = json.loads(json.dumps(backend.prepare_exception(e)))
    assert stored == {"exc_type": name, "exc_module": "orchestration.errors", "exc_message": [str(e)]}
    back = backend.exception_to_python(stored)
    assert type(back) is cls and str(back) == str(e) and back.args == e.args


@pytest.mark.parametrize(("name", "cls"), ALL)
def test_without_quorum_installed_str_is_the_message(backend, name: str, cls: type[QuorumError]) -> None:
    """A producer that cannot import Quorum: Celery rebuilds a stand-in class of the same name in
    ``celery.exceptions`` as ``cls(*exc_message)``; its ``str()`` must be the message, not a tuple."""
    e = cls("unknown provider 'nope'; configured: gemma", field="providers")
    stored = json.loads(json.dumps(backend.prepare_exception(e)))
    stored["exc_module"] = "quorum_is_not_installed_here.errors"  # a module the producer lacks
    back = backend.exception_to_python(stored)
    assert not isinstance(back, QuorumError)
    assert type(back).__name__ == name and type(back).__module__ == "celery.exceptions"
    assert str(back) == "unknown provider 'nope'; configured: gemma"


def test_typed_attributes_read_the_details() -> None:
    e = AllProvidersFailedError("every provider failed", attempts=[{"provider": "a"}], provider="a")
    assert (e.provider, e.status, e.retry_after, e.field, e.reason, e.code) == (
        "a",
        None,
        None,
        None,
        None,
        None,
    )
    assert e.attempts == [{"provider": "a"}]
    assert InvalidRequestError("bad", field="providers").field == "providers"
    assert ServerError("x").attempts == []


@pytest.mark.parametrize(("name", "cls"), ALL)
def test_to_dict_round_trip(name: str, cls: type[QuorumError]) -> None:
    e = _sample(cls)
    data = json.loads(json.dumps(e.to_dict()))
    assert data["type"] == name and data["message"] == str(e)
    _same(e, error_from_dict(data))


def test_error_from_dict_unknown_type_is_quorum_error() -> None:
    back = error_from_dict({"type": "SomethingNew", "message": "hm", "provider": "x"})
    assert type(back) is QuorumError
    assert str(back) == "hm" and back.provider == "x"


def test_missing_fields_read_as_none_and_none_is_dropped() -> None:
    e = ServerError("boom", provider="gemini", status=None)
    assert e.status is None and e.retry_after is None
    assert e.details == {"provider": "gemini"}
    with pytest.raises(AttributeError):
        _ = e.no_such_field


def test_kind_and_flags() -> None:
    assert RateLimitedError("x").kind == "RateLimitedError"
    assert issubclass(OverloadedError, ServerError) and issubclass(ServerError, ProviderError)
    assert not BadRequestError.counts_for_breaker and AuthError.counts_for_breaker
    assert not hasattr(QuorumError, "retryable")  # read nowhere: removed


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (429, RateLimitedError),
        (500, ServerError),
        (502, ServerError),
        (504, ServerError),
        (503, OverloadedError),
        (529, OverloadedError),
        (401, AuthError),
        (403, AuthError),
        (400, BadRequestError),
        (404, BadRequestError),
        (422, BadRequestError),
    ],
)
def test_class_for_status(status: int, cls: type[ProviderError]) -> None:
    assert class_for_status(status) is cls


def test_overloaded_body_wins_over_status() -> None:
    assert class_for_status(500, overloaded=True) is OverloadedError


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, 5.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-1"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str] | None, expected: float | None) -> None:
    assert parse_retry_after(headers, now=5.0) == expected


def _google_error(*details: dict[str, object]) -> dict[str, object]:
    return {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": list(details)}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_google_error({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}), 3.0),
        (_google_error({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.5s"}), 0.5),
        (_google_error({"@type": "type.googleapis.com/google.rpc.QuotaFailure"}), None),
        (_google_error({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "soon"}), None),
        ({"error": {"code": 429}}, None),
        ("not json", None),
    ],
)
def test_gemini_retry_info(body: object, expected: float | None) -> None:
    assert retry_info_delay(body) == expected


def test_gemini_bad_key_is_recognised() -> None:
    body = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}  # fmt: skip
    assert _api_key_invalid(body)
    assert not _api_key_invalid({"error": {"code": 400, "status": "INVALID_ARGUMENT"}})


def test_gemini_sdk_errors_map_without_headers() -> None:
    """RetryInfo stands in for a missing retry-after; a 400 API_KEY_INVALID is an AuthError."""
    from google.genai import errors as genai_errors

    from orchestration.providers.gemini import status_error_of

    retry = _google_error({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "4s"})
    limited = status_error_of("gem", genai_errors.ClientError(429, retry, None))
    assert type(limited) is RateLimitedError and limited.retry_after == 4.0 and limited.status == 429
    bad_key = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "API key not valid.",
                         "details": [{"reason": "API_KEY_INVALID"}]}}  # fmt: skip
    auth = status_error_of("gem", genai_errors.ClientError(400, bad_key, None))
    assert type(auth) is AuthError and auth.status == 400 and auth.provider == "gem"
    assert str(auth) == "gem: HTTP 400 INVALID_ARGUMENT: API key not valid."


def test_a_failed_jobs_error_payload_round_trips_through_the_backend(backend) -> None:
    from workers.job_errors import error_id, store_error

    e = AllProvidersFailedError("job j1: every provider failed", job_id="j1", attempts=[{"provider": "a"}])
    store_error(backend, "j1", e)
    payload = backend.get_task_meta(error_id("j1"))["result"]  # what AsyncResult("j1:error").result reads
    assert payload == json.loads(json.dumps(e.to_dict()))
    _same(e, error_from_dict(payload))


def test_a_job_ends_typed_whatever_its_task_raised() -> None:
    """``as_job_error``: Redis gone past the retries (redis-py's or kombu's error) is
    ``RedisUnavailableError``, anything else a ``QuorumError`` naming the original; both blame
    nobody's provider, and a Quorum error is kept as it is."""
    import kombu.exceptions
    import redis

    from workers.job_errors import as_job_error

    for raw in (
        redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        redis.BusyLoadingError("Redis is loading the dataset in memory"),
        kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    ):
        e = as_job_error(raw, "j1")
        assert type(e) is RedisUnavailableError and e.reason == "redis_unreachable" and e.job_id == "j1"
        assert type(raw).__name__ in str(e) and str(raw) in str(e)
        assert not e.counts_for_breaker and e.blame == "none"
        _same(e, pickle.loads(pickle.dumps(e)))
    internal = as_job_error(AttributeError("'NoneType' object has no attribute 'client'"), "j2")
    assert type(internal) is QuorumError and internal.reason == "internal"
    assert "builtins.AttributeError: 'NoneType' object has no attribute 'client'" in str(internal)
    typed = AllProvidersFailedError("every provider failed")
    assert as_job_error(typed, "j3") is typed


def test_fields_are_typed_attributes_and_details_is_their_json_view() -> None:
    e = RateLimitedError("slow down", provider="openai", status=429, retry_after=1.5, tokens_in=3)
    assert (e.provider, e.status, e.retry_after, e.tokens_in, e.tokens_out) == ("openai", 429, 1.5, 3, None)
    assert e.details == {"provider": "openai", "status": 429, "retry_after": 1.5, "tokens_in": 3}
    e.attempt = {"provider": "openai"}  # set by the task that ran the call
    assert e.details["attempt"] == {"provider": "openai"}
    copy = e.with_details(retry_after=2.0)
    assert type(copy) is RateLimitedError and copy.retry_after == 2.0 and copy.attempt == e.attempt


def test_unknown_fields_survive_a_round_trip() -> None:
    """A field a newer worker wrote is kept (``extra``) rather than lost or fatal."""
    back = error_from_dict({"type": "ServerError", "message": "m", "provider": "p", "shard": 7})
    assert back.provider == "p" and back.extra == {"shard": 7}
    assert error_from_dict(json.loads(json.dumps(back.to_dict()))).details == back.details
    _same(back, pickle.loads(pickle.dumps(back)))


def test_one_sdk_error_mapping_for_every_vendor() -> None:
    """``mapped_errors`` raises the error of the first matching row ``from`` the SDK's; a row
    that maps to None, an unmatched exception and Quorum's own errors pass unchanged."""
    from orchestration.providers.http_errors import mapped_errors

    table = (
        (KeyError, lambda provider, e: RateLimitedError(f"{provider}: {e}", provider=provider)),
        (LookupError, lambda provider, e: ServerError("never: KeyError matched first")),
        (ValueError, lambda provider, e: None),
    )
    with pytest.raises(RateLimitedError) as info, mapped_errors("p", table):
        raise KeyError("k")
    assert isinstance(info.value.__cause__, KeyError) and info.value.provider == "p"
    for raised in (ValueError("not ours"), TypeError("unmatched"), AuthError("already mapped")):
        with pytest.raises(type(raised)) as passed, mapped_errors("p", table):
            raise raised
        assert passed.value is raised
