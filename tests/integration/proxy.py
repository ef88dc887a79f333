"""A loopback HTTP proxy in front of the emulator that can rewrite what a provider answers, for
tests that need misbehaviour the emulator does not offer: a model that obeys a prompt injection,
an API whose error message echoes the caller's API key."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

#: Hop-by-hop or length headers the proxy recomputes instead of copying.
_DROPPED = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-encoding",
    "accept-encoding",
}


@dataclass
class Exchange:
    """One proxied request and the upstream's answer, which a rewrite may change in place."""

    provider: str
    path: str
    request_headers: dict[str, str]
    status: int
    headers: dict[str, str]
    body: bytes


Rewrite = Callable[[Exchange], None]


@dataclass
class RewritingProxy:
    """Forwards every request to ``upstream``; ``rewrites[provider]`` may alter the answer."""

    upstream: str
    rewrites: dict[str, Rewrite] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._http = httpx.Client(base_url=self.upstream, timeout=60.0)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                sent = {k: v for k, v in self.headers.items() if k.lower() not in _DROPPED}
                reply = proxy._http.request(self.command, self.path, content=body, headers=sent)
                ex = Exchange(
                    provider=self.path.lstrip("/").split("/", 1)[0],
                    path=self.path,
                    request_headers={k.lower(): v for k, v in self.headers.items()},
                    status=reply.status_code,
                    headers={k: v for k, v in reply.headers.items() if k.lower() not in _DROPPED},
                    body=reply.content,
                )
                if rewrite := proxy.rewrites.get(ex.provider):
                    rewrite(ex)
                self.send_response(ex.status)
                for k, v in ex.headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(ex.body)))
                self.end_headers()
                self.wfile.write(ex.body)

            do_GET = do_POST = do_PUT = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        """Stop serving (bounded) and close the upstream client."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._http.close()


@contextmanager
def rewriting_proxy(upstream: str) -> Iterator[RewritingProxy]:
    """A running proxy for the ``with`` block."""
    proxy = RewritingProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()
