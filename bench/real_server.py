"""Quorum against a real OpenAI-compatible server (e.g. ``python -m llama_cpp.server``) through a
real local fleet: failover, consensus and best-match over a few labelled emails.

``python -m bench.real_server --base-url http://127.0.0.1:8181/v1 --model gemma --emails 8``
starts a private Valkey and one worker process (``celery -A workers.app worker``) with a config
holding one provider ``gemma`` (``kind = "openai_compatible"``, ``structured_output = "auto"``)
and ``dead`` (nothing listens there: failover must move on), sends the jobs by name and prints
success rate, latency (median/p95), field accuracy against the labels, the attempts' error
classes, the mode ``auto`` remembered and the breaker state. Figures are of that model on this
machine, reported as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from celery.result import AsyncResult

from bench.accuracy import correct
from bench.stats import median, p95
from orchestration.data import FIELDS, load_emails
from orchestration.state import output_mode_key
from stack.local import LocalFleet, start_valkey

CONFIG = """
key_prefix = "quorum:"
worker_concurrency = {concurrency}

[providers.gemma]
kind = "openai_compatible"
model = "{model}"
base_url = "{base_url}"
priority = 2
timeout_s = {timeout}
structured_output = "{mode}"

[providers.dead]
kind = "openai_compatible"
model = "{model}"
base_url = "http://127.0.0.1:9/v1"
priority = 1
timeout_s = 5

[orchestration]
deadline_s = {deadline}
min_responses = 2
cache_ttl_s = 0

[orchestration.variations]
temps = [
    {{ provider = "gemma", params = {{ temperature = 0.2{max_tokens} }} }},
    {{ provider = "gemma", params = {{ temperature = 0.7{max_tokens} }} }},
    {{ provider = "gemma", params = {{ temperature = 1.0{max_tokens} }} }},
]
"""


def _job(strategy: str, text: str, max_tokens: int | None) -> dict[str, Any]:
    job: dict[str, Any] = {"text": text, "strategy": strategy, "use_cache": False}
    if strategy == "failover":
        job["providers"] = ["dead", "gemma"]
        if max_tokens:
            job["params"] = {"max_tokens": max_tokens}
    else:
        job.update(variations="temps", early_quorum=False)
    return job


def _row(strategy: str, runs: list[tuple[Any, float, Any]]) -> dict[str, Any]:
    ok = [(e, s, r) for e, s, r in runs if isinstance(r, dict)]
    hits = Counter[str]()
    for email, _, result in ok:
        for f in FIELDS:
            hits[f] += correct(f, (result["fields"].get(f) or {}).get("value"), email.labels[f])
    attempts = [a for _, _, r in ok for a in r.get("attempts", [])]
    errors = Counter((a.get("error") or {}).get("type", "?") for a in attempts if not a.get("ok"))
    failures = Counter(type(r).__name__ for _, _, r in runs if not isinstance(r, dict))
    return {
        "strategy": strategy,
        "jobs": len(runs),
        "ok": len(ok),
        "median_s": round(median([s for _, s, _ in runs]), 2),
        "p95_s": round(p95([s for _, s, _ in runs]), 2),
        "field_accuracy": round(sum(hits.values()) / (len(ok) * len(FIELDS)), 3) if ok else None,
        "per_field": {f: hits[f] for f in FIELDS},
        "attempts_ok": sum(1 for a in attempts if a.get("ok")),
        "attempt_errors": dict(errors),
        "job_failures": dict(failures),
        "tokens": sum(int(r.get("tokens_in", 0)) + int(r.get("tokens_out", 0)) for _, _, r in ok),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the jobs and print one JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", default="gemma")
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--emails", type=int, default=8)
    ap.add_argument("--strategies", default="failover,consensus,best_match")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=3)
    args = ap.parse_args(argv)
    emails = load_emails()[: args.emails]
    with (
        tempfile.TemporaryDirectory(prefix="quorum-real-") as tmp,
        start_valkey() as url,
    ):
        config = Path(tmp) / "quorum.toml"
        max_tokens = f", max_tokens = {args.max_tokens}" if args.max_tokens else ""
        config.write_text(CONFIG.format(
            concurrency=args.concurrency, model=args.model, base_url=args.base_url, timeout=args.timeout,
            mode=args.mode, deadline=min(600, int(args.timeout * 3)), max_tokens=max_tokens,
        ))  # fmt: skip
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")},
               "QUORUM_CONFIG": str(config), "QUORUM_REDIS_URL": url,
               "QUORUM_FLEET_SECRET": secrets.token_hex(32)}  # fmt: skip
        fleet = LocalFleet(env, Path(tmp))
        settings, app = fleet.settings, fleet.app
        try:
            fleet.start_workers(["real"], pool="threads", concurrency=args.concurrency)
            report: dict[str, Any] = {"emails": len(emails), "rows": []}
            for strategy in args.strategies.split(","):
                runs = []
                for email in emails:
                    start = time.perf_counter()
                    kwargs = _job(strategy, email.text, args.max_tokens)
                    job: AsyncResult = app.send_task("quorum.extract", kwargs=kwargs)
                    try:
                        result: Any = job.get(timeout=600)
                    except Exception as e:  # a report counts failures, it never stops on one
                        result = e
                    runs.append((email, time.perf_counter() - start, result))
                    print(strategy, email.id, type(result).__name__ if not isinstance(result, dict) else "ok",
                          f"{runs[-1][1]:.1f}s", file=sys.stderr)  # fmt: skip
                report["rows"].append(_row(strategy, runs))
            r = redis.Redis.from_url(url, decode_responses=True)
            report["remembered_mode"] = r.hgetall(output_mode_key(settings.key_prefix, "gemma"))
            report["breaker"] = r.hgetall(f"{settings.key_prefix}{{gemma}}:breaker")
            report["health"] = r.hgetall(f"{settings.key_prefix}{{gemma}}:health")
            print(json.dumps(report, indent=1, default=str))
        finally:
            fleet.close()


if __name__ == "__main__":
    main()
