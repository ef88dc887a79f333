"""Quorum benchmarks: runnable modules that print figures (``python -m bench`` runs them all)."""
