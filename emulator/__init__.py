"""HTTP emulator of the Anthropic, OpenAI and Gemini APIs with fault injection.

It speaks the vendors' real wire formats on loopback so the official SDKs run end to end
against it. Numbers measured on it are a simulation and are reported as such.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["serve"]


def serve(host: str = "127.0.0.1", port: int = 0, profile: Path | None = None) -> None:
    """Serve the emulator (blocking); see :func:`emulator.server.serve`."""
    from emulator.server import serve as _serve

    _serve(host, port, profile)
