"""The emulator's ASGI application: provider routes in three wire formats plus admin routes.

Each provider is addressed by a path prefix (its name); unprefixed routes default to
``openai``/``anthropic``/``gemini``. A request is counted, checked (down switch, API key),
given a latency and maybe a fault, then answered in its vendor's shape. Every wait races the
client's disconnect, so hangs are cheap, cancellable and never block the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from emulator import answers, generation
from emulator.dataset import Dataset, load_dataset
from emulator.faults import ERROR_LATENCY_SHARE, STATUS_FAULTS, pick_fault, sample_latency
from emulator.profile import EmulatorProfile, ProviderProfile, load_profile
from emulator.prompts import email_from_prompt
from emulator.state import EmulatorState, ProviderState
from emulator.wire import Call, Reply, Wire, WireError, estimate_tokens
from emulator.wire.anthropic import AnthropicWire
from emulator.wire.flavours import Refused
from emulator.wire.gemini import GeminiWire
from emulator.wire.openai import OpenAIWire
from orchestration.config import default_providers

log = logging.getLogger("emulator")

_RAW_SEND = "emulator.raw_send"
GEMINI_VERSIONS = frozenset({"v1", "v1beta"})
#: Providers the un-prefixed routes serve (``/v1/messages`` is "anthropic", ...).
WIRE_DEFAULTS = frozenset({"openai", "anthropic", "gemini"})


async def wait_or_disconnect(receive: Receive, seconds: float) -> bool:
    """Sleep ``seconds`` unless the client disconnects first; True when it did."""
    if seconds <= 0:
        return False
    try:
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


def _abort_connection(scope: Scope) -> bool:
    """Reset the client's TCP connection (RST, no response); False if the server hides it."""
    transport = getattr(getattr(scope.get(_RAW_SEND), "__self__", None), "transport", None)
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # linger 0: close() sends RST instead of FIN, like a crashed load balancer
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


class Emulator:
    """Serves provider calls from a profile, a labelled data set and run-time state."""

    def __init__(self, profile: EmulatorProfile, dataset: Dataset | None = None) -> None:
        self.state = EmulatorState(profile)
        self.dataset = dataset if dataset is not None else load_dataset(profile.dataset)

    async def handle(self, wire: Wire, provider: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Count one provider request and serve it (in-flight while it runs)."""
        state = self.state.get(provider)
        state.requests += 1
        state.in_flight += 1
        try:
            await self._serve(wire, state, scope, receive, send)
        finally:
            state.in_flight -= 1

    async def _error(self, wire: Wire, kind: str, prof: ProviderProfile, scope: Scope,
                     receive: Receive, send: Send, message: str = "") -> None:  # fmt: skip
        """Send ``kind``'s error in the vendor's shape."""
        err = wire.error(kind, message, prof.retry_after_s)
        await JSONResponse(err.body, err.status, err.headers)(scope, receive, send)

    async def _serve(self, wire: Wire, state: ProviderState, scope: Scope,
                     receive: Receive, send: Send) -> None:  # fmt: skip
        """Down switch, key check, parse, fault and latency draws, then the answer or error."""
        request = Request(scope, receive)
        raw = await request.body()
        prof, rng = state.profile, state.rng
        if state.down:
            state.errors["down"] += 1
            return await self._error(wire, "down", prof, scope, receive, send)
        key = wire.api_key(request)
        if not key or key == prof.reject_key:
            state.errors["auth"] += 1
            return await self._error(wire, "auth", prof, scope, receive, send)
        try:
            call = wire.parse(json.loads(raw), {**scope.get("path_params", {}), "flavour": prof.flavour})
        except Refused as e:  # the flavour's own refusal of a structured-output request
            state.errors["refused"] += 1
            return await JSONResponse(e.reply.body, e.reply.status, e.reply.headers)(scope, receive, send)
        except (ValueError, WireError) as e:
            state.errors["bad_request"] += 1
            msg = str(e) if isinstance(e, WireError) else "The request body is not valid JSON."
            return await self._error(wire, "bad_request", prof, scope, receive, send, msg)
        fault = pick_fault(prof, rng)
        delay = sample_latency(prof, rng)
        if fault is not None:
            state.errors[fault] += 1
            log.debug("%s: injecting %s", state.name, fault)
        if fault in STATUS_FAULTS:
            if not await wait_or_disconnect(receive, delay * ERROR_LATENCY_SHARE):
                await self._error(wire, fault, prof, scope, receive, send)
            return None
        if fault == "reset":
            if await wait_or_disconnect(receive, delay * ERROR_LATENCY_SHARE):
                return None
            if _abort_connection(scope):
                await wait_or_disconnect(receive, 5.0)  # let the server see the connection go
                return None
            return await self._error(wire, "server", prof, scope, receive, send)
        # Draw the answer before waiting, so a seeded run consumes randomness in arrival order.
        reply = self.answer(wire, call, fault, prof, state)
        if await wait_or_disconnect(receive, prof.hang_s if fault == "hang" else delay):
            return None
        await JSONResponse(wire.success(call, reply))(scope, receive, send)
        return None

    def answer(self, wire: Wire, call: Call, fault: str | None, prof: ProviderProfile,
               state: ProviderState) -> Reply:  # fmt: skip
        """The reply to ``call``: extraction JSON or free text, spoiled by ``fault`` if asked."""
        rng = state.rng
        content: str | dict[str, Any]
        if call.schema is not None:
            email = email_from_prompt(call.user) or call.user
            data = answers.extract(email, call.schema, self.dataset, prof, rng, call.temperature)
            if fault == "schema":
                data = answers.violate_schema(data, rng)
            text = json.dumps(data, ensure_ascii=False)
            if fault == "malformed":
                content = text = answers.malformed(text, rng)
            else:
                content = data if wire.name == "anthropic" else text
            if call.fenced:
                content = text = f"```json\n{text}\n```"
        else:
            scale = answers.noise_scale(prof, call.temperature)
            text = generation.respond(call.system, call.user, prof, rng, scale)
            if fault in ("malformed", "schema"):  # free text has no schema: cut it short
                text = text[: len(text) // 2]
            content = text
        tokens_out, truncated = estimate_tokens(text), False
        if call.max_tokens is not None and tokens_out > call.max_tokens:
            tokens_out, truncated = call.max_tokens, True
            if isinstance(content, str):
                content = content[: call.max_tokens * 4]
        if call.schema is None:  # the reply's text, after any cut (logged even if the caller leaves)
            state.answers.append({"prompt": call.user, "temperature": call.temperature, "text": content})
        tokens_in = estimate_tokens(f"{call.system}\n{call.user}")
        return Reply(content, tokens_in, tokens_out, truncated)


class _ProviderRoute:
    """ASGI endpoint of one wire format; the provider comes from the path or a default."""

    def __init__(self, emulator: Emulator, wire: Wire, default: str | None = None) -> None:
        self.emulator, self.wire, self.default = emulator, wire, default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params", {})
        provider = params.get("provider") or self.default or self.wire.name
        if "version" in params and params["version"] not in GEMINI_VERSIONS:
            err = self.wire.error("not_found", "", 0)
            await JSONResponse(err.body, err.status, err.headers)(scope, receive, send)
            return
        await self.emulator.handle(self.wire, provider, scope, receive, send)


def _admin_routes(emu: Emulator) -> list[Route]:
    """``/_admin/*``: health, stats, free-text answers served, reset, down/up switches and profile
    overrides.

    A provider the emulator does not know (not in its profile, not one of Quorum's default
    provider names or a wire's default name, never served) is a 404: a typo in a switch must
    not pass as a success.
    """

    def unknown(name: str) -> JSONResponse | None:
        known = {*emu.state.profile.providers, *emu.state.providers, *WIRE_DEFAULTS, *default_providers()}
        if name in known:
            return None
        return JSONResponse({"error": f"unknown provider {name!r}; known: {', '.join(sorted(known))}"}, 404)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(emu.state.stats())

    async def served(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if (missing := unknown(name)) is not None:
            return missing
        return JSONResponse({"provider": name, "answers": list(emu.state.get(name).answers)})

    async def reset(request: Request) -> JSONResponse:
        emu.state.reset()
        return JSONResponse({"reset": True})

    async def switch(request: Request) -> JSONResponse:
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in ("down", "up"):
            return JSONResponse({"error": f"unknown action {action!r}; use down or up"}, 404)
        if (missing := unknown(name)) is not None:
            return missing
        emu.state.get(name).down = action == "down"
        return JSONResponse({"provider": name, "down": action == "down"})

    async def provider(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if (missing := unknown(name)) is not None:
            return missing
        if request.method == "PUT":
            try:
                overrides = json.loads(await request.body() or b"{}")
                if not isinstance(overrides, dict):
                    raise ValueError("the body must be a JSON object of profile keys")
                emu.state.configure(name, overrides)
            except (ValueError, ValidationError) as e:
                return JSONResponse({"error": str(e)}, 400)
        state = emu.state.get(name)
        return JSONResponse({"provider": name, "profile": state.profile.model_dump(),
                             "overrides": state.overrides, "down": state.down})  # fmt: skip

    return [
        Route("/_admin/health", health, methods=["GET"]),
        Route("/_admin/stats", stats, methods=["GET"]),
        Route("/_admin/answers/{name}", served, methods=["GET"]),
        Route("/_admin/reset", reset, methods=["POST"]),
        Route("/_admin/providers/{name}/{action:str}", switch, methods=["POST"]),
        Route("/_admin/providers/{name}", provider, methods=["GET", "PUT"]),
    ]


class EmulatorApp:
    """The ASGI callable uvicorn runs; keeps the server's raw ``send`` so resets can abort."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        oa, an, ge = OpenAIWire(), AnthropicWire(), GeminiWire()
        post = ["POST"]
        routes = [
            *_admin_routes(emulator),
            Route("/v1/chat/completions", _ProviderRoute(emulator, oa), methods=post),
            Route("/v1/messages", _ProviderRoute(emulator, an), methods=post),
            Route("/{version}/models/{model}:generateContent", _ProviderRoute(emulator, ge), methods=post),
            Route("/{provider}/v1/chat/completions", _ProviderRoute(emulator, oa), methods=post),
            Route("/{provider}/v1/messages", _ProviderRoute(emulator, an), methods=post),
            Route(
                "/{provider}/{version}/models/{model}:generateContent",
                _ProviderRoute(emulator, ge),
                methods=post,
            ),
        ]
        self.router = Starlette(routes=routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_RAW_SEND] = send
        await self.router(scope, receive, send)


def create_app(profile: EmulatorProfile | dict[str, Any] | None = None,
               dataset: Dataset | None = None) -> EmulatorApp:  # fmt: skip
    """The emulator ASGI app for ``profile`` (default: the packaged ``default.toml``)."""
    prof = profile if isinstance(profile, EmulatorProfile) else load_profile(profile)
    return EmulatorApp(Emulator(prof, dataset))
