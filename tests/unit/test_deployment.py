"""Procfile, docker-compose.yml, Dockerfile and the docs agree, and name the real app."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

ROOT = Path(__file__).resolve().parents[2]
APP_MODULE = "workers.app"
PUBLIC_AND_INTERNAL_TASKS = {"quorum.extract", "quorum.call", "quorum.merge", "quorum.failover_next"}
REDIS_URL = "redis://worker:${WORKER_REDIS_PASSWORD:?set WORKER_REDIS_PASSWORD}@redis:6379/0"
ACL_PASSWORDS = {  # `quorum acl --password-env` variable -> the host variable compose requires
    "QUORUM_ACL_ADMIN_PASSWORD": "REDIS_PASSWORD",
    "QUORUM_ACL_WORKER_PASSWORD": "WORKER_REDIS_PASSWORD",
    "QUORUM_ACL_PRODUCER_PASSWORD": "PRODUCER_REDIS_PASSWORD",
    "QUORUM_ACL_OPS_PASSWORD": "OPS_REDIS_PASSWORD",
}
PROVIDER_KEYS = {"ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"}


# --------------------------------------------------------------------------- a tiny YAML subset
# PyYAML is not a dependency. docker-compose.yml keeps to block mappings, block sequences of
# scalars, JSON-style flow sequences and quoted or plain scalars; anything else is refused here
# (so a richer compose file fails loudly rather than being misread).


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _scalar(text: str) -> Any:
    if text.startswith("["):
        return json.loads(text)
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        assert text.endswith("'"), text
        return text[1:-1].replace("''", "'")
    if text[0] in "&*!|>{@`" or text.startswith("<<"):
        raise NotImplementedError(f"YAML feature outside the tested subset: {text!r}")
    return text


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- "):
        items: list[Any] = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            item = lines[i][1][2:].strip()
            if re.match(r"^[\w.-]+:(\s|$)", item):
                raise NotImplementedError(f"mapping inside a sequence: {item!r}")
            items.append(_scalar(item))
            i += 1
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        key, sep, rest = lines[i][1].partition(":")
        assert sep and re.fullmatch(r"[\w.-]+", key), f"not a 'key: value' line: {lines[i][1]!r}"
        rest = rest.strip()
        i += 1
        if rest:
            mapping[key] = _scalar(rest)
        elif i < len(lines) and lines[i][0] > indent:
            mapping[key], i = _block(lines, i, lines[i][0])
        else:
            mapping[key] = None
    return mapping, i


def load_yaml(text: str) -> Any:
    """Parse the YAML subset described above."""
    assert "\t" not in text, "tabs in YAML"
    lines = []
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if line.strip():
            lines.append((len(line) - len(line.lstrip(" ")), line.strip()))
    value, end = _block(lines, 0, lines[0][0])
    assert end == len(lines), f"unparsed from line {lines[end]!r}"
    return value


def test_yaml_subset_parser() -> None:
    doc = load_yaml('a:\n  b: "x y"  # c\n  l:\n    - one\n    - \'t#o\'\n  f: ["p", "q"]\n  n:\nz: 1\n')
    assert doc == {"a": {"b": "x y", "l": ["one", "t#o"], "f": ["p", "q"], "n": None}, "z": "1"}
    with pytest.raises(NotImplementedError):
        load_yaml("a: &anchor x\n")


# --------------------------------------------------------------------------- the files


@cache
def procfile() -> dict[str, str]:
    """``{process type: command}`` from the Procfile."""
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line):
            entries[m[1]] = m[2].strip()
    return entries


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    return load_yaml((ROOT / "docker-compose.yml").read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def normalise(command: str | list[str]) -> list[str]:
    """Shell words with variables reduced: ``${X:-d}`` → ``d``; ``${X:?msg}``, ``${X}`` → ``$X``."""
    text = command if isinstance(command, str) else shlex.join(command)

    def var(m: re.Match[str]) -> str:
        name, rest = m[1], m[2] or ""
        return rest.split("-", 1)[1] if rest.lstrip(":").startswith("-") else f"${name}"

    return shlex.split(re.sub(r"\$\{(\w+)([^}]*)\}", var, text))


def launched(command: str) -> str:
    """The command a Procfile line runs, without its ``: "${X:?msg}" && exec`` guard."""
    return re.sub(r'^:\s+"\$\{\w+:\?[^}]*\}"\s+&&\s+exec\s+', "", command)


def environment(svc: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a dict; a bare ``- NAME`` (pass-through from the host) is None."""
    env = svc.get("environment") or {}
    if isinstance(env, dict):
        return env
    return {k: (v if sep else None) for k, sep, v in (item.partition("=") for item in env)}


def documented_commands() -> list[list[str]]:
    """Every ``celery`` command line in the README (and docs/operations.md until merged into it)."""
    texts = [ROOT / "README.md", ROOT / "docs" / "operations.md"]
    lines = "\n".join(p.read_text() for p in texts if p.exists()).splitlines()
    commands = []
    for line in lines:
        line = re.sub(r"\s+#.*$", "", line.strip().removeprefix("$ "))
        line = launched(re.sub(r"^[A-Za-z0-9_-]+:\s+", "", line))  # a Procfile line shown as is
        if line.startswith(("celery ", "quorum ")):
            try:
                commands.append(normalise(line))
            except ValueError:
                continue
    return commands


# --------------------------------------------------------------------------- tests


def test_procfile_names_the_real_app_and_its_tasks() -> None:
    assert set(procfile()) == {"worker", "flower", "metrics"}
    assert normalise(procfile()["worker"])[:4] == ["celery", "-A", APP_MODULE, "worker"]
    assert normalise(launched(procfile()["flower"]))[:4] == ["celery", "-A", APP_MODULE, "flower"]
    assert normalise(procfile()["metrics"])[:2] == ["quorum", "metrics"]
    module = importlib.import_module(APP_MODULE)
    assert isinstance(module.app, Celery)
    importlib.import_module("workers.tasks")
    assert set(module.app.tasks) >= PUBLIC_AND_INTERNAL_TASKS


def test_flower_requires_basic_auth_from_the_environment_never_the_command_line() -> None:
    assert procfile()["flower"].startswith(': "${FLOWER_BASIC_AUTH:?')  # unset or empty: no start
    assert environment(service("flower"))["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    commands = [
        launched(procfile()["flower"]),
        service("flower")["command"],
        *map(shlex.join, documented_commands()),
    ]
    assert not [c for c in commands if "basic-auth" in c or "basic_auth" in c]  # ps shows argv


def test_compose_runs_the_procfile_commands() -> None:
    assert normalise(service("worker")["command"]) == normalise(procfile()["worker"])
    assert normalise(service("flower")["command"]) == normalise(launched(procfile()["flower"]))
    assert normalise(service("metrics")["command"]) == normalise(procfile()["metrics"])


def test_redis_is_password_protected_persistent_and_private() -> None:
    redis = service("redis")
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "--requirepass" not in command  # the aclfile defines every user, default included
    assert "ports" not in redis
    volumes = [v.split(":")[0] for v in redis["volumes"]]
    assert set(volumes) <= set(compose()["volumes"])  # named volumes, not host paths
    assert redis["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
    assert environment(redis)["REDISCLI_AUTH"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}"


def test_redis_users_come_from_quorum_acl_before_redis_starts() -> None:
    redis, acl = service("redis"), service("redis-acl")
    aclfile = redis["command"][redis["command"].index("--aclfile") + 1]
    mount = next(v for v in redis["volumes"] if v.startswith("redis-acl:"))
    assert mount.endswith(":ro") and aclfile == mount.split(":")[1] + "/users.acl"
    assert redis["depends_on"]["redis-acl"]["condition"] == "service_completed_successfully"
    words = normalise(acl["command"])
    assert words[:2] == ["sh", "-c"]
    assert shlex.split(words[2]) == [
        "quorum",
        "acl",
        "--format",
        "aclfile",
        "--password-env",
        ">",
        "users.acl",
    ]
    home = acl["volumes"][0].split(":")[1]
    assert acl["volumes"] == [f"redis-acl:{home}"] and home == "/home/quorum"  # its working directory
    env = environment(acl)
    assert env == {k: f"${{{v}:?set {v}}}" for k, v in ACL_PASSWORDS.items()}  # all required


def test_the_acl_step_writes_every_user_with_hashed_passwords() -> None:
    from typer.testing import CliRunner

    from quorum_cli.main import cli

    words = shlex.split(normalise(service("redis-acl")["command"])[2])
    env = {k: f"pw-{k}" for k in ACL_PASSWORDS}
    result = CliRunner().invoke(cli, words[1 : words.index(">")], env=env)
    assert result.exit_code == 0, result.output
    users = [line.split()[:3] for line in result.output.splitlines()]
    assert [u[1] for u in users] == ["default", "producer", "worker", "ops"]
    assert all(u[0] == "user" and u[2] == "on" for u in users)
    assert "pw-" not in result.output  # SHA-256 hashes only


def test_services_connect_as_their_acl_users() -> None:
    for name in ("worker", "flower"):
        assert environment(service(name))["QUORUM_REDIS_URL"] == REDIS_URL


def test_workers_scale_and_take_keys_only_from_the_environment() -> None:
    worker = service("worker")
    assert "container_name" not in worker and "ports" not in worker
    assert worker["build"] == "."
    env = environment(worker)
    assert env["QUORUM_REDIS_URL"] == REDIS_URL
    assert {k: env.get(k, "missing") for k in PROVIDER_KEYS} == dict.fromkeys(PROVIDER_KEYS)  # pass-through
    assert "QUORUM_EMULATOR_URL" in env and env["QUORUM_EMULATOR_URL"] is None
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_flower_is_published_on_loopback_only() -> None:
    flower = service("flower")
    assert environment(flower)["QUORUM_REDIS_URL"] == REDIS_URL
    assert flower["ports"] and all(p.startswith("127.0.0.1:") for p in flower["ports"])
    assert "FLOWER_UNAUTHENTICATED_API" not in environment(flower)


def test_only_flower_publishes_a_port() -> None:
    published = {name for name, svc in compose()["services"].items() if svc.get("ports")}
    assert published == {"flower"}
    assert not any(svc.get("network_mode") == "host" for svc in compose()["services"].values())


def test_emulator_is_opt_in_and_runs_the_cli() -> None:
    emulator = service("emulator")
    assert emulator["profiles"] == ["emulator"]
    assert normalise(emulator["command"]) == ["quorum", "emulator", "--host", "0.0.0.0", "--port", "8765"]
    from quorum_cli.local import emulator as emulator_command

    assert {"host", "port"} <= set(inspect.signature(emulator_command).parameters)
    assert all("profiles" not in svc for name, svc in compose()["services"].items() if name != "emulator")


def test_image_installs_the_package_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert re.search(r"pip install\b.*(\s\.|/src)\b", dockerfile)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".env", ".venv"} <= ignored
    for svc in ("worker", "flower", "emulator", "redis-acl"):
        assert service(svc)["build"] == "." and service(svc)["image"] == service("worker")["image"]


def test_docs_show_the_procfile_commands() -> None:
    documented = documented_commands()
    for name, command in procfile().items():
        assert normalise(launched(command)) in documented, f"the {name} command is not in the README"


def test_one_emulator_port_everywhere() -> None:
    from quorum_cli.local import EMULATOR_PORT

    assert (
        inspect.signature(importlib.import_module("quorum_cli.local").emulator).parameters["port"].default
        == EMULATOR_PORT
    )
    for doc in (".env.example", "quorum.example.toml", "README.md", "docker-compose.yml"):
        text = (ROOT / doc).read_text()
        ports = set(re.findall(r"(?:127\.0\.0\.1|emulator|--port):?\s?(\d{4})\b", text)) - {
            "5555",
            "6379",
            "9464",
        }
        assert ports == {str(EMULATOR_PORT)}, (doc, ports)
