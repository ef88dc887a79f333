"""Cost of a call in integer micro-USD: with prices per million tokens, a token costs exactly
``price`` micro-USD, so integer counters never drift."""

from __future__ import annotations

from orchestration.config import ProviderConfig


def cost_micro_usd(config: ProviderConfig, tokens_in: int, tokens_out: int) -> int:
    """Micro-USD for one call (rounded half up once, per call)."""
    exact = tokens_in * config.price_in_per_mtok + tokens_out * config.price_out_per_mtok
    return int(exact + 0.5)


def usd(micro: int) -> float:
    """Micro-USD to USD for display and results."""
    return micro / 1_000_000
