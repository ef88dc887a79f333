"""Least privilege on real Valkey ACLs: a worker running as the ``worker`` user serves a producer
running as the ``producer`` user, which can send a job and read its answer and nothing else; the
``ops`` user runs ``quorum status`` / ``set-strategy`` / ``reset`` and cannot enqueue."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from celery import Celery
from click.testing import Result
from typer.testing import CliRunner

from emulator.admin import EmulatorHandle
from quorum_cli.main import cli
from tests.integration.fleet import Fleet
from workers.acl import ROLES, AclNames, password_rule, role_rules

EMAIL = "Hi team, Dana Reyes from Lumen Labs here. Our pilot with Northwind starts 2026-03-02."
PASSWORD = "s3cret-for-tests"


@dataclass
class AclFleet:
    """One worker running as ``worker``; URLs of the three users on the same Valkey."""

    fleet: Fleet
    urls: dict[str, str]
    admin: redis.Redis

    def client(self, role: str) -> redis.Redis:
        return redis.Redis.from_url(self.urls[role])


@pytest.fixture(scope="module")
def acl_fleet(
    redis_url: str, emulator: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AclFleet]:
    """Create the three users from ``role_rules`` and start one worker as ``worker``."""
    admin = redis.Redis.from_url(redis_url)
    names = AclNames.from_settings("quorum:", redis_url)
    parts = urlsplit(redis_url)
    urls = {}
    for role in ROLES:
        admin.execute_command(
            "ACL", "SETUSER", role, "reset", "on", password_rule(PASSWORD, role), *role_rules(role, names)
        )
        urls[role] = parts._replace(netloc=f"{role}:{PASSWORD}@{parts.hostname}:{parts.port}").geturl()
    fleet = Fleet(redis_url=urls["worker"], emulator_url=emulator.url,
                  workdir=tmp_path_factory.mktemp("acl"), concurrency=4)  # fmt: skip
    try:
        fleet.reset_state()
        fleet.start_worker("acl1")
        yield AclFleet(fleet, urls, admin)
    finally:
        fleet.stop()
        fleet.reset_state()  # the fleet setting written here must not reach the next module
        admin.execute_command("ACL", "DELUSER", *ROLES)


def denied(call: Callable[[], object]) -> str:
    """The NOPERM error a call raises (fails the test if it is allowed)."""
    with pytest.raises(redis.exceptions.NoPermissionError) as e:
        call()
    return str(e.value)


def test_producer_sends_a_job_and_reads_its_answer_and_nothing_else(acl_fleet: AclFleet) -> None:
    url = acl_fleet.urls["producer"]
    producer = Celery(broker=url, backend=url)
    try:
        chord = producer.send_task(
            "quorum.extract", kwargs={"text": EMAIL, "strategy": "consensus"}, queue="quorum"
        )
        job = producer.send_task("quorum.extract", kwargs={"text": EMAIL}, queue="quorum")
        answers = [chord.get(timeout=60), job.get(timeout=60)]
    finally:
        producer.close()
    assert [a["job_id"] for a in answers] == [chord.id, job.id]
    assert [a["strategy"] for a in answers] == ["consensus", "failover"]
    assert all(a["fields"]["startup_name"]["value"] for a in answers)

    admin, r = acl_fleet.admin, acl_fleet.client("producer")
    admin.set("quorum:fleet:strategy", '{"strategy":"failover"}')
    denied(lambda: r.get("quorum:fleet:strategy"))  # fleet state
    denied(lambda: r.hgetall("quorum:{openai}:breaker"))
    denied(lambda: r.set("anything", "x"))  # any other key
    denied(lambda: r.set(f"celery-task-meta-{job.id}", "forged"))  # overwrite a result
    denied(lambda: r.delete(f"celery-task-meta-{job.id}"))
    denied(lambda: r.lpush("celery", "x"))  # another list or queue
    denied(lambda: r.lpush("quorum:job:{x}:answers", "x"))
    denied(lambda: r.sadd("quorum", "x"))  # the queue key, as another type (binding rights are SADD)
    denied(lambda: r.lrange("quorum", 0, -1))  # other producers' pending messages
    denied(lambda: r.rpop("quorum"))
    denied(lambda: r.hset("unacked", "tag", "x"))
    denied(lambda: r.publish("/0.celery.pidbox", "{}"))  # broadcast control (shutdown...)
    denied(lambda: r.publish(f"celery-task-meta-{job.id}", "{}"))
    denied(lambda: r.eval("return 1", 0))
    denied(lambda: r.flushall())
    denied(lambda: r.keys("*"))
    denied(lambda: r.scan())
    pubsub = r.pubsub()
    pubsub.psubscribe("celery-task-meta-*")  # every job's answer as it is published
    denied(lambda: pubsub.get_message(timeout=5))
    assert json.loads(r.get(f"celery-task-meta-{job.id}"))["status"] == "SUCCESS"


def quorum(args: list[str], fleet: Fleet, url: str) -> Result:
    """Run the ``quorum`` command with the fleet's config and ``url`` as its Redis."""
    env = {"QUORUM_CONFIG": str(fleet.config_path), "QUORUM_REDIS_URL": url}
    return CliRunner().invoke(cli, args, env=env)


def test_ops_reads_status_and_writes_the_fleet_setting_and_breakers_only(acl_fleet: AclFleet) -> None:
    fleet, url = acl_fleet.fleet, acl_fleet.urls["ops"]
    status = quorum(["status", "--detailed", "--json"], fleet, url)
    assert status.exit_code in (0, 1), status.output
    assert {p["provider"] for p in json.loads(status.output)["providers"]} == set(fleet.settings.providers)

    assert quorum(["set-strategy", "consensus", "--order", "openai,claude"], fleet, url).exit_code == 0
    assert json.loads(acl_fleet.admin.get("quorum:fleet:strategy"))["strategy"] == "consensus"
    acl_fleet.admin.hset("quorum:{openai}:breaker", mapping={"state": "open", "reason": "test"})
    reset = quorum(["reset", "openai"], fleet, url)
    assert reset.exit_code == 0, reset.output
    assert acl_fleet.admin.hget("quorum:{openai}:breaker", "state") in (None, b"closed")

    r = acl_fleet.client("ops")
    denied(lambda: r.lpush("quorum", "x"))  # ops cannot enqueue
    denied(lambda: r.get("celery-task-meta-x"))  # nor read answers, cached or not
    denied(lambda: r.get("quorum:cache:x"))
    denied(lambda: r.hset("quorum:{openai}:health", "calls", 0))  # health is the workers' record
    denied(lambda: r.flushall())


def test_worker_user_cannot_administer_redis(acl_fleet: AclFleet) -> None:
    r = acl_fleet.client("worker")
    for call in (r.flushall, r.flushdb, lambda: r.keys("*"), lambda: r.config_get("*"), r.shutdown):
        denied(call)
    denied(lambda: r.execute_command("ACL", "LIST"))
    r.get("quorum:fleet:strategy")  # fleet state and kombu's keys are the worker's own
    r.hlen("unacked")
    r.set("quorum:acl-test", "1")
    assert r.delete("quorum:acl-test") == 1
    assert Path(fleet_log := acl_fleet.fleet.workdir / "acl1.log").exists()
    assert "NOPERM" not in fleet_log.read_text(errors="replace")
