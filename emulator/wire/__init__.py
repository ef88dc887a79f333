"""Vendor wire formats: each module turns a vendor request into a :class:`Call` and renders
answers and errors in that vendor's real JSON shapes, so each SDK raises its own classes."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request


@dataclass(frozen=True)
class Call:
    """A provider request in vendor-neutral form: who asked what, with which schema."""

    model: str
    system: str
    user: str
    schema: dict[str, Any] | None = None
    tool_name: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    #: Answer JSON inside a Markdown fence, as models do when only the prompt asks for JSON.
    fenced: bool = False


@dataclass(frozen=True)
class Reply:
    """What to send back: text, or an object (Anthropic tool input), with usage."""

    content: str | dict[str, Any]
    tokens_in: int
    tokens_out: int
    truncated: bool = False


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error in a vendor's shape: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class WireError(ValueError):
    """The request body is not a valid request for this vendor (answered with a 400)."""


class Wire(Protocol):
    """What each vendor module provides."""

    name: str

    def api_key(self, request: Request) -> str | None:
        """The API key the SDK sent (never logged or echoed)."""

    def parse(self, body: Any, path_params: dict[str, str]) -> Call:
        """The vendor-neutral call, or :class:`WireError`."""

    def success(self, call: Call, reply: Reply) -> dict[str, Any]:
        """The vendor's success body."""

    def error(self, kind: str, message: str, retry_after_s: float) -> ErrorReply:
        """The vendor's error for ``kind`` (a fault kind, ``down`` or ``not_found``)."""


def estimate_tokens(text: str) -> int:
    """Deterministic token estimate: a quarter of the characters, rounded up (at least 1)."""
    return max(1, math.ceil(len(text) / 4))


def new_id(prefix: str) -> str:
    """A random response id such as ``msg_01a2...``."""
    return f"{prefix}{secrets.token_hex(12)}"


def retry_after_header(seconds: float) -> str:
    """``retry-after`` as whole seconds when integral, else a decimal (both SDKs accept it)."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def text_of(content: Any) -> str:
    """Concatenated text of a string or a list of text parts/blocks (others ignored)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part
        )
    return ""


def opt_float(value: Any, name: str) -> float | None:
    """``value`` as a float, None when absent; WireError when it is not a number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WireError(f"{name} must be a number")
    return float(value)


def opt_int(value: Any, name: str) -> int | None:
    """``value`` as a positive int, None when absent; WireError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WireError(f"{name} must be a positive integer")
    return value
