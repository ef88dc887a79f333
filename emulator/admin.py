"""A client of a running emulator's admin API: its URL, the SDK base URLs, stats, faults, down
switches. :func:`stack.local.start_emulator` starts one and yields this handle."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx

from orchestration.config import ProviderConfig, ProviderKind

_DEFAULT_MODELS: dict[str, str] = {
    "anthropic": "claude-emulated",
    "openai": "gpt-emulated",
    "openai_compatible": "local-emulated",
    "gemini": "gemini-emulated",
}


class EmulatorHandle:
    """A running emulator: its URL, per-provider base URLs and the admin endpoints."""

    def __init__(self, url: str, process: subprocess.Popen[bytes] | None = None) -> None:
        self.url = url.rstrip("/")
        self.process = process
        self._http = httpx.Client(base_url=self.url, timeout=10.0)

    def base_url(self, kind: ProviderKind, provider: str) -> str:
        """The SDK base URL for ``provider`` of ``kind`` (same rule as the settings use)."""
        config = ProviderConfig(kind=kind, model=_DEFAULT_MODELS[kind])
        url = config.effective_base_url(provider, self.url)
        assert url is not None
        return url

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        """True when the emulator answers its health check."""
        return self._json("GET", "/_admin/health").get("status") == "ok"

    def stats(self) -> dict[str, dict[str, Any]]:
        """``{provider: {"requests", "errors": {kind: n}, "in_flight", "down"}}``."""
        return self._json("GET", "/_admin/stats")  # type: ignore[no-any-return]

    def requests(self, provider: str) -> int:
        """How many requests reached ``provider``'s routes since start or the last reset."""
        return int(self.stats().get(provider, {}).get("requests", 0))

    def errors(self, provider: str) -> dict[str, int]:
        """Faults served by ``provider``, by kind."""
        return dict(self.stats().get(provider, {}).get("errors", {}))

    def answers(self, provider: str) -> list[dict[str, Any]]:
        """The free-text replies ``provider`` drew, oldest first (the last
        ``emulator.state.ANSWER_LOG``; a request its caller gave up on is there too):
        ``{"prompt", "temperature", "text"}`` each."""
        return self._json("GET", f"/_admin/answers/{provider}")["answers"]  # type: ignore[no-any-return]

    def set_down(self, provider: str, down: bool = True) -> None:
        """Take ``provider`` down (every request gets a 503) or bring it back up."""
        self._json("POST", f"/_admin/providers/{provider}/{'down' if down else 'up'}")

    def configure(self, provider: str, **overrides: Any) -> dict[str, Any]:
        """Merge profile ``overrides`` into ``provider`` at run time; returns the new profile."""
        return self._json("PUT", f"/_admin/providers/{provider}", overrides)["profile"]  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Clear counters, run-time overrides and down switches."""
        self._json("POST", "/_admin/reset")

    def close(self) -> None:
        """Close the admin HTTP client."""
        self._http.close()
