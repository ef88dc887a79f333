"""A loopback TCP relay in front of Redis that stops a client at one exact command: the first
bytes a client sends that contain ``needle`` are never forwarded, and ``on_match`` runs first
(e.g. SIGKILL the worker). Kills a worker at a chosen point of its Redis conversation, with no
timing guesswork and nothing in the worker's code."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class CuttingRelay:
    """Relays every connection to ``upstream`` until a client sends ``needle``."""

    upstream: tuple[str, int]
    needle: bytes
    on_match: Callable[[], None]
    matched: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        tail = b""
        try:
            while chunk := src.recv(1 << 16):
                if watch and self.needle in tail + chunk:
                    with self._lock:
                        if not self.matched.is_set():
                            self.on_match()
                            self.matched.set()
                    return  # this command, and anything after it, never reaches Redis
                if self.matched.is_set():
                    return  # the cut client is gone: nothing more from it either way
                dst.sendall(chunk)
                tail = chunk[-len(self.needle) :]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        """Stop accepting; relayed connections end with their clients."""
        self._listener.close()
