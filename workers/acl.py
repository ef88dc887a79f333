"""Redis ACL rules for the fleet's three roles (``quorum acl``): a pure function of the settings.

Each command and key below was observed (``MONITOR``) from a real producer (``send_task`` +
``AsyncResult.get``), a real worker serving failover, consensus and refused jobs, and the ops
commands (``status --detailed``, ``set-strategy``, ``reset``):

- **producer** — ``LPUSH`` onto the queue (``LLEN`` of its priority lists when Celery declares it),
  ``SADD`` of the queue's own kombu binding (the same declaration), ``GET`` and ``SUBSCRIBE`` on
  ``celery-task-meta-<id>``. Nothing else: no Quorum state, no other list, no ``PSUBSCRIBE``
  (a pattern subscription would show every job's answer).
- **worker** — every key of the fleet: Quorum state under the prefix, Celery results and chord
  counters, kombu's queue, binding, un-acked and pidbox keys, by name families, so new keys under
  the prefix, ``_kombu.*`` or ``unacked*`` need no new rule; every command except ``@admin`` and
  ``@dangerous`` ones (``FLUSHALL``, ``KEYS``, ``CONFIG``, ``DEBUG``, ``SHUTDOWN``, ``ACL``...).
- **ops** — read the fleet's metrics (provider-tagged keys, the fleet setting, stats), write the
  fleet setting and breakers; never job contents (results, cache, per-job keys) nor the queue.

Rules use selectors (Redis >= 7.0, Valkey) so that each command reaches only its own keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import urlsplit

Role = Literal["producer", "worker", "ops"]
ROLES: tuple[Role, ...] = ("producer", "worker", "ops")
Format = Literal["setuser", "aclfile"]

#: kombu's separator between a queue name and its priority (``quorum\x06\x163``).
PRIORITY_SEP = "\x06\x16"
#: Celery's result keys (the Redis backend's ``task_keyprefix`` / ``group_keyprefix``).
RESULT_KEYS = "celery-task-meta-*"
GROUP_KEYS = "celery-taskset-meta-*"
#: Celery's control (``celery.pidbox``) and event (``celeryev``) exchanges, default names.
PIDBOX = "celery.pidbox"
EVENTS = "celeryev"
#: Key families ops may read under the prefix: provider-tagged keys (``{openai}:breaker``,
#: ``{fleet}:jobs``), the fleet setting and stats. Job contents (``cache:``, ``job:``) stay out.
OPS_READ = ("{*", "fleet:*", "stats:*")
#: What ops may write (and read) under the prefix: the fleet setting, the breakers (``quorum
#: reset``) and the cost day index, only because ``status --detailed`` reads it with ``EVAL``,
#: which ACLs treat as a write to its declared keys (budgets read the day hashes: read-only).
OPS_WRITE = ("fleet:*", "{*}:breaker*", "{*}:cost:days")
#: Connection housekeeping every client sends (redis-py's ``HELLO``, ``CLIENT SETINFO``, ``PING``).
CONNECTION = ("+hello", "+ping", "+client|setinfo", "+client|setname", "+quit", "+reset")
#: Commands a worker never needs; @admin/@dangerous miss these script/function flushes.
WORKER_DENY = ("-@admin", "-@dangerous", "-script|flush", "-script|kill", "-function")


@dataclass(frozen=True)
class AclNames:
    """What the rules are derived from: the key prefix, the queue and the broker's database."""

    key_prefix: str = "quorum:"
    queue: str = "quorum"
    db: int = 0

    @classmethod
    def from_settings(cls, key_prefix: str, broker_url: str | None, queue: str = "quorum") -> AclNames:
        """Names for a fleet: its prefix, its queue and the database in its broker URL (else 0)."""
        path = urlsplit(broker_url).path.strip("/") if broker_url else ""
        return cls(key_prefix=key_prefix, queue=queue, db=int(path) if path.isdigit() else 0)


def _literal(name: str) -> str:
    """``name`` as a glob matching only itself (ACL key and channel patterns are globs)."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in name)


def role_rules(role: Role, names: AclNames) -> list[str]:
    """The ACL rules of ``role`` (without user name, ``on`` or password), one token each."""
    p, q = _literal(names.key_prefix), _literal(names.queue)
    fanout = f"/{names.db}."
    # Clients send SELECT for a database other than 0 only. ACLs span databases: one fleet per
    # Redis, or a producer of one fleet could push into another's queue of the same name.
    connection = [*CONNECTION, "+select"] if names.db else list(CONNECTION)
    if role == "producer":
        return [
            "resetchannels",
            f"~{q}",
            f"~{q}{PRIORITY_SEP}*",
            f"&{RESULT_KEYS}",
            "-@all",
            *connection,
            "+multi",
            "+exec",
            "+discard",
            "+lpush",
            "+llen",
            "+subscribe",
            "+unsubscribe",
            f"(%R~{RESULT_KEYS} +get)",
            f"(~_kombu.binding.{q} ~_kombu.binding_permanent.{q} +sadd)",
        ]
    if role == "worker":
        return [
            "resetchannels",
            f"~{p}*",
            f"~{q}*",
            f"~{RESULT_KEYS}",
            f"~{GROUP_KEYS}",
            "~_kombu.*",
            "~unacked*",
            f"~*.{PIDBOX}*",
            f"~{EVENTS}.*",  # event receivers' queues (gossip, Flower): ``celeryev.<uuid>``
            f"&{RESULT_KEYS}",
            f"&{fanout}{EVENTS}/*",
            f"&{fanout}{EVENTS}/worker.*",
            f"&{fanout}{PIDBOX}",
            "+@all",
            *WORKER_DENY,
        ]
    if role == "ops":
        return [
            "resetchannels",
            *(f"%R~{p}{k}" for k in OPS_READ),
            *(f"~{p}{k}" for k in OPS_WRITE),  # one pattern must grant both: EVAL needs RW
            "-@all",
            *connection,
            "+@read",
            "+@write",
            "+@transaction",
            "+eval",
            "+evalsha",
            "+script|load",
            "+script|exists",
            "-@admin",
            "-@dangerous",
        ]
    raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def password_rule(password: str | None, role: str) -> str:
    """``#<sha256>`` of the password (no clear text in files or history), else a placeholder
    that Redis refuses (not 64 hex digits), so an unfilled line can never create a user."""
    if password is None:
        return f"#<sha256-of-{role}-password>"
    if not password:
        raise ValueError(f"the {role} password is empty")
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def _quote(token: str) -> str:
    """A token as ``redis-cli`` reads it: double-quoted with escapes when not plain."""
    if token and all(c.isprintable() and c not in " \"\\'" for c in token):
        return token
    body = "".join(
        "\\\\" if c == "\\" else '\\"' if c == '"' else c if c.isprintable() else f"\\x{ord(c):02x}"
        for c in token
    )
    return f'"{body}"'


def render(
    names: AclNames,
    roles: Sequence[Role] = ROLES,
    fmt: Format = "setuser",
    passwords: Mapping[str, str] | None = None,
    users: Mapping[str, str] | None = None,
    admin_password: str | None = None,
) -> str:
    """The rules of ``roles`` as ``ACL SETUSER`` commands (for ``redis-cli``) or aclfile lines.

    ``passwords`` maps a role to its password (else a placeholder); ``users`` maps a role to its
    Redis user name (default: the role's name). An aclfile cannot quote: kombu's priority
    separator is written as its raw bytes there, as ``ACL SAVE`` writes it. An aclfile also
    defines ``default`` (a file without it leaves ``default`` passwordless with every right):
    the administrator with ``admin_password``, else switched off.
    """
    lines = []
    if fmt == "aclfile":
        admin = f"on {password_rule(admin_password, 'admin')} ~* &* +@all" if admin_password else "off"
        lines.append(f"user default {admin}")
    for role in roles:
        user = (users or {}).get(role, role)
        tokens = [user, "reset", "on", password_rule((passwords or {}).get(role), role)]
        tokens += role_rules(role, names)
        if fmt == "aclfile":
            if any(c.isspace() for t in tokens for c in t if not t.startswith("(")):
                raise ValueError(f"an aclfile cannot hold a space in a name: {tokens}")
            lines.append(" ".join(["user", *(t for t in tokens if t != "reset")]))
        else:
            lines.append(" ".join(["ACL", "SETUSER", *(_quote(t) for t in tokens)]))
    return "\n".join(lines) + "\n"


def password_env(role: str) -> str:
    """The environment variable ``quorum acl --password-env`` reads ``role``'s password from."""
    return f"QUORUM_ACL_{role.upper()}_PASSWORD"


def command_output(
    key_prefix: str, broker_url: str | None, role: str, fmt: str, env: Mapping[str, str] | None
) -> str:
    """What ``quorum acl`` prints; ``env`` set: passwords from it (each role's must be there, the
    administrator's, for an aclfile's ``default`` user, is optional)."""
    roles: tuple[Role, ...] = ROLES if role == "all" else tuple(r for r in ROLES if r == role)
    if not roles:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)} or all")
    if fmt not in ("setuser", "aclfile"):
        raise ValueError(f"unknown format {fmt!r}; choose setuser or aclfile")
    passwords = None
    if env is not None:
        missing = [password_env(r) for r in roles if not env.get(password_env(r))]
        if missing:
            raise ValueError(f"--password-env: set {', '.join(missing)}")
        passwords = {r: env[password_env(r)] for r in roles}
    names = AclNames.from_settings(key_prefix, broker_url)
    admin = env.get(password_env("admin")) if env is not None else None
    return render(names, roles, cast(Format, fmt), passwords, admin_password=admin or None)
