"""Bytes per job: what a 2-hop failover job (first provider down) writes into Redis, counted as the
growth of the server's ``total_net_input_bytes`` on a Valkey of its own, for emails of several
sizes; the figure per job, the ratio to the email's size, and one consensus-of-3 job for scale.

Target (issue 14.1): ≤ 3× the email's size for a 50,000-character email. What is counted is
everything clients send the server: the producer's message (kombu base64-encodes the body), the
job's spec stored once, the hops, the results, the acks, the task events (pub/sub).
"""

from __future__ import annotations

import time
from typing import Any

from bench.harness import Bench, quiet_profile
from bench.report import Section, cli
from bench.stats import median, table, verdict
from orchestration.data import load_emails

ORDER = ["claude", "openai", "gemini"]
SIZES = (5_000, 20_000, 50_000)
TARGET_RATIO = 3.0


def _email(chars: int) -> str:
    """``chars`` characters of the data set's distinct emails one after another (not one email
    repeated, which would compress unrealistically well); the emulator answers it heuristically."""
    texts = [e.text for e in load_emails()]
    return "\n\n".join(texts * (chars // sum(map(len, texts)) + 1))[:chars]


def _bytes_in(b: Bench) -> int:
    return int(b.redis.info("stats")["total_net_input_bytes"])


def _one(b: Bench, text: str, strategy: str) -> int:
    """Bytes the server received while one job ran (quiet fleet: only its own traffic)."""
    time.sleep(0.3)  # let the previous job's acks and events settle
    before = _bytes_in(b)
    result = b.send(text=text, strategy=strategy, providers=ORDER, use_cache=False).get(timeout=60)
    time.sleep(0.3)
    assert isinstance(result, dict) and result.get("fields") is not None, result
    return _bytes_in(b) - before


def run(full: bool = False) -> Section:
    """Measure bytes per failover job (2 hops) at each email size, and per consensus-of-3 job."""
    rounds = 7 if full else 3
    rows: list[list[Any]] = []
    figures: dict[str, Any] = {}
    with Bench(workers=1, profile=quiet_profile(5.0)) as b:
        b.emulator.set_down("claude")
        for chars in SIZES:
            text = _email(chars)
            size = len(text.encode())
            failover = median([_one(b, text, "failover") for _ in range(rounds)])
            b.emulator.set_down("claude", False)
            consensus = median([_one(b, text, "consensus") for _ in range(rounds)])
            b.emulator.set_down("claude")
            figures[str(chars)] = {
                "email_bytes": size,
                "failover_bytes": failover,
                "failover_ratio": round(failover / size, 2),
                "consensus_bytes": consensus,
                "consensus_ratio": round(consensus / size, 2),
            }
            rows.append([f"{chars:,}", f"{failover:,.0f}", f"{failover / size:.2f}×",
                         f"{consensus:,.0f}", f"{consensus / size:.2f}×"])  # fmt: skip
    at_50k = figures[str(SIZES[-1])]["failover_ratio"]
    met = at_50k <= TARGET_RATIO
    md = (
        f"Bytes written into Redis per job (median of {rounds}; server `total_net_input_bytes`, "
        "one worker, emulator at 5 ms, first provider down for the failover jobs):\n\n"
        + table(["email chars", "failover (2 hops) B", "÷ email", "consensus-of-3 B", "÷ email"], rows)
        + f"\n\nTarget: a 2-hop failover job with a 50,000-character email ≤ {TARGET_RATIO:.0f}× "
        f"the email → {at_50k:.2f}× {verdict(met)}. The text is sent once by the producer "
        "(base64 in kombu's envelope, ~1.4×) and stored once, compressed, as the job's spec; hops, errbacks "
        "and the chord body carry the job id."
    )
    data = {"sizes": figures, "rounds": rounds, "target_ratio": TARGET_RATIO, "met": met, "full": full}
    return Section("bytes", "Bytes into Redis per job", md, data)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    cli(run, argv)


if __name__ == "__main__":
    main()
