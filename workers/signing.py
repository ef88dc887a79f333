"""Authenticated internal messages: every task a worker sends to another worker (hops, chord
headers and bodies, errbacks) carries an HMAC-SHA256 over its name, its task id and the
canonical JSON of its keyword arguments, keyed by the fleet secret.

Producers hold no secret, so they can send the public tasks only: an internal task whose MAC is
missing or wrong is logged and acknowledged without running, and nothing is stored under the
id its sender chose (that id may be a real job's). Arguments Celery itself prepends (a chord's
header results, an errback's request and exception) come from the fleet's own result backend
and tracer, not from the message, and are not covered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from functools import cache
from pathlib import Path
from typing import Any

from celery import Celery, bootsteps, signature
from celery.canvas import Signature

from orchestration.config import Settings
from orchestration.errors import ConfigError
from stack import embedded

log = logging.getLogger("quorum.signing")

#: The keyword argument that carries an internal message's MAC.
MAC_FIELD = "mac"
#: Shortest accepted secret (bytes): 128 bits of entropy at least.
MIN_SECRET_BYTES = 16
#: Where the embedded (one-machine) stack keeps the secret it generated for its own workers.
EMBEDDED_SECRET_NAME = "fleet-secret"


def canonical(task: str, task_id: str | None, kwargs: dict[str, Any]) -> bytes:
    """The signed bytes: name, id and sorted compact JSON of the arguments (MAC excluded)."""
    body = {k: v for k, v in kwargs.items() if k != MAC_FIELD}
    material = [task, task_id or "", body]
    return json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def mac(key: bytes, task: str, task_id: str | None, kwargs: dict[str, Any]) -> str:
    """HMAC-SHA256 (hex) of one internal message."""
    return hmac.new(key, canonical(task, task_id, kwargs), hashlib.sha256).hexdigest()


def valid(key: bytes, task: str, task_id: str | None, kwargs: dict[str, Any]) -> bool:
    """True when ``kwargs`` carries the right MAC for this task name and id."""
    given = kwargs.get(MAC_FIELD)
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given, mac(key, task, task_id, kwargs))


def signed(
    app: Celery, key: bytes, task: str, kwargs: dict[str, Any], *, task_id: str | None = None, **options: Any
) -> Signature:
    """A signature of an internal task whose kwargs carry their MAC (Flower shows none of them).

    Sent without declaring its queue (``declare=[]``): workers declare the queues they consume,
    and Celery would otherwise declare the task's queue before each send (kombu binds a copy of
    the queue each time, a tenth of a millisecond per message, to find it declared already)."""
    kwargs = {**kwargs, MAC_FIELD: mac(key, task, task_id, kwargs)}
    if task_id is not None:
        options["task_id"] = task_id
    options.setdefault("kwargsrepr", "{}")
    options.setdefault("declare", [])
    return signature(task, kwargs=kwargs, app=app, **options)


# --------------------------------------------------------------------------- the fleet secret


def embedded_secret_path() -> Path:
    """The secret of the one-machine stack (demo, ``quorum worker``): next to the embedded data."""
    return embedded.data_dir().parent / EMBEDDED_SECRET_NAME


def embedded_secret() -> bytes:
    """Read, or create once (mode 0600), the embedded stack's own secret."""
    path = embedded_secret_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def fleet_secret(settings: Settings, broker_url: str | None) -> bytes:
    """The fleet secret: ``QUORUM_FLEET_SECRET``, else ``QUORUM_FLEET_SECRET_FILE``, else (only on
    the embedded Valkey the CLI started) a secret generated for this machine; else ConfigError."""
    if settings.fleet_secret is not None and settings.fleet_secret.get_secret_value():  # empty = unset
        raw = settings.fleet_secret.get_secret_value().encode()
        source = "QUORUM_FLEET_SECRET"
    elif settings.fleet_secret_file is not None:
        try:
            raw = settings.fleet_secret_file.read_bytes().strip()
        except OSError as e:
            raise ConfigError(
                f"QUORUM_FLEET_SECRET_FILE: cannot read {settings.fleet_secret_file}: {e.strerror}",
                key="QUORUM_FLEET_SECRET_FILE",
            ) from None
        source = "QUORUM_FLEET_SECRET_FILE"
    elif broker_url is not None and broker_url == embedded.running_url():
        return embedded_secret()
    else:
        raise ConfigError(
            "no fleet secret: set QUORUM_FLEET_SECRET (e.g. `openssl rand -hex 32`), or "
            "QUORUM_FLEET_SECRET_FILE to a file holding it; every worker of a fleet needs the same one",
            key="QUORUM_FLEET_SECRET",
        )
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(f"{source} is shorter than {MIN_SECRET_BYTES} bytes", key=source)
    return raw


@cache
def worker_key(app: Celery) -> bytes:
    """This worker's fleet secret (resolved once per process)."""
    return fleet_secret(app.conf.quorum_settings, app.conf.broker_url)


class RequireFleetSecret(bootsteps.Step):
    """Worker bootstep: a worker without the fleet secret cannot sign or check internal
    messages, so it refuses to start (a ``worker_init`` handler's error would only be logged)."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        worker_key(parent.app)
