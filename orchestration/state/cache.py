"""The result cache: a finished answer keyed by what determines it (job kind, normalised
input, schema, strategy, candidates, and what would produce it: provider, model, emulated or
not), kept for the configured TTL; hits and misses are counted for ``quorum status``."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from orchestration.config import Settings
from orchestration.state.scripts import Queued


def _normalise_input(text: str) -> str:
    """NFKC and collapsed whitespace: the same email re-sent with other spacing hits the cache."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def answer_sources(settings: Settings, providers: list[str]) -> list[list[Any]]:
    """What would produce an answer: ``[provider, model, emulated]`` per provider, so an answer the
    emulator gave (``QUORUM_EMULATOR_URL`` set) never answers a request meant for real providers."""
    emulated = bool(settings.emulator_url)
    out = []
    for name in sorted(set(providers)):
        config = settings.providers.get(name)
        out.append([name, config.model if config else None, emulated])
    return out


def cache_key(
    prefix: str, kind: str, text: str, schema: Any, strategy: str, candidates: list[Any], sources: list[Any]
) -> str:
    """The key of one answer: a SHA-256 over the canonical JSON of everything that shapes it."""
    material = json.dumps(
        [kind, _normalise_input(text), schema, strategy, candidates, sources],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return f"{prefix}cache:{hashlib.sha256(material.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _stats(prefix: str) -> str:
    return f"{prefix}stats:cache"


def lookup(redis: Redis, prefix: str, key: str) -> dict[str, Any] | None:
    """The cached answer, counting the hit or miss; None on a miss or when Redis cannot say."""
    try:
        raw = redis.get(key)
        redis.hincrby(_stats(prefix), "hits" if raw else "misses", 1)
    except RedisError:
        return None
    return json.loads(raw) if raw else None


def queue_store(key: str, result: dict[str, Any], ttl_s: int) -> Queued[None] | None:
    """Keep an answer for ``ttl_s`` seconds, as a write that rides in another step's round trip
    (with the job's answer); None when caching is off (``ttl_s`` 0). Safe to repeat."""
    if ttl_s <= 0:
        return None
    value = json.dumps(result, separators=(",", ":"))

    def queue(pipe: Any) -> int:
        pipe.set(key, value, ex=ttl_s)
        return 1

    return Queued(queue, lambda replies: None)


def hit_rate(redis: Redis, prefix: str) -> tuple[int, int]:
    """``(hits, misses)`` since the counters were last cleared."""
    raw = redis.hgetall(_stats(prefix))
    get = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    return get.get("hits", 0), get.get("misses", 0)
