"""The result cache: a finished answer keyed by what determines it (job kind, normalised
input, schema, strategy, candidates, and what would produce it: provider, model, emulated or
not), kept for the configured TTL; hits and misses are counted for ``quorum status``."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from redis import Redis

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


def queue_lookup(prefix: str, key: str) -> Queued[dict[str, Any] | None]:
    """The cached answer (None on a miss, or for an entry that is not an answer), as commands for
    a round trip shared with the entry's spec store. The lookup is counted as a miss at once;
    :func:`queue_count_hit` turns it into a hit, with the hit's other writes (so a lookup costs
    no round trip of its own)."""

    def queue(pipe: Any) -> int:
        pipe.get(key)
        pipe.hincrby(_stats(prefix), "misses", 1)
        return 2

    def parse(replies: list[Any]) -> dict[str, Any] | None:
        try:
            hit = json.loads(replies[0]) if replies[0] else None
        except ValueError:  # not an answer this code wrote: a miss (the job's answer replaces it)
            return None
        return hit if isinstance(hit, dict) else None

    return Queued(queue, parse)


def queue_count_hit(prefix: str) -> Queued[None]:
    """A lookup of :func:`queue_lookup` that found its answer: one miss less, one hit more."""
    stats = _stats(prefix)

    def queue(pipe: Any) -> int:
        pipe.hincrby(stats, "misses", -1)
        pipe.hincrby(stats, "hits", 1)
        return 2

    return Queued(queue, lambda replies: None)


@dataclass(frozen=True)
class CacheEntry:
    """An answer to keep under ``key`` for ``ttl_s`` seconds, as stored (``value``, JSON): a
    write to send with the job's answer, as a step of its own (:meth:`queued`) or inside the
    script that publishes the answer (then only by the run that publishes it)."""

    key: str
    value: str
    ttl_s: int

    def queued(self) -> Queued[None]:
        """The write as a step for a shared round trip; safe to repeat."""

        def queue(pipe: Any) -> int:
            pipe.set(self.key, self.value, ex=self.ttl_s)
            return 1

        return Queued(queue, lambda replies: None)


def entry(key: str, result: dict[str, Any], ttl_s: int) -> CacheEntry | None:
    """``result`` as an entry under ``key``; None when caching is off (``ttl_s`` 0)."""
    if ttl_s <= 0:
        return None
    return CacheEntry(key, json.dumps(result, separators=(",", ":")), ttl_s)


def hit_rate(redis: Redis, prefix: str) -> tuple[int, int]:
    """``(hits, misses)`` since the counters were last cleared."""
    raw = redis.hgetall(_stats(prefix))
    get = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    return get.get("hits", 0), get.get("misses", 0)
