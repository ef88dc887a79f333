"""The real Flower against a real fleet: jobs and provider calls visible, email text never, auth on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from orchestration.data import load_emails
from orchestration.errors import AllProvidersFailedError, InvalidRequestError
from stack.client import submit
from tests.integration.fleet import Fleet
from workers.canvas import hop_id, merge_id, redacted_kwargs, text_repr

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

EMAIL = load_emails()[0]
USER, PASSWORD = "ops", "flower-test-pass"
#: Pieces of the email body that no extracted field contains: if Flower shows one, the body leaked.
BODY_SNIPPETS = ("quick reply at the Boston meetup", "daniel@lumora.example.com", "555-0142")
ORDER = ["claude", "openai", "gemini"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(what: str, probe: Callable[[], Any], timeout: float, log: Callable[[], str]) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` and the log after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := probe():
                return value
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"Flower: {what} within {timeout:.0f} s\n{log()}")


@dataclass
class Flower:
    """A running ``celery -A workers.app flower`` process and an authenticated client for it."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=5.0, auth=(USER, PASSWORD))
        self.anonymous = httpx.Client(base_url=self.url, timeout=5.0)

    def log(self) -> str:
        """The tail of Flower's output."""
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def api(self, path: str, **params: Any) -> tuple[Any, str]:
        """GET an API path with basic auth: the decoded JSON and the raw body."""
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json(), response.text

    def task(self, task_id: str) -> dict[str, Any] | None:
        """Flower's record of one task, or None while it has not seen it."""
        response = self.http.get(f"/api/task/info/{task_id}")
        return None if response.status_code == 404 else response.raise_for_status().json()

    def stop(self) -> None:
        """Terminate the process group (SIGKILL if it lingers) and close the clients."""
        self.http.close()
        self.anonymous.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def flower(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    """Flower on a free loopback port, with basic auth, reading the fleet's broker, events live."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("flower") / "flower.log"
    env = {k: v for k, v in fleet.env.items() if not k.startswith("FLOWER_")}  # no unauthenticated API
    env["FLOWER_BASIC_AUTH"] = f"{USER}:{PASSWORD}"  # as documented: from the environment, not argv
    cmd = [
        sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}",
        "--address=127.0.0.1", "--persistent=False",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    f = Flower(proc, f"http://127.0.0.1:{port}", log_path)
    try:

        def answering() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"Flower exited with {proc.returncode}:\n{f.log()}")
            return f.http.get("/healthcheck").status_code == 200

        _until("HTTP answering", answering, 20, f.log)
        # Flower only sees events sent while it listens: wait until worker heartbeats reach it.
        _until("worker heartbeats seen", lambda: 'flower_worker_online{worker="w' in _metrics(f), 10, f.log)
        yield f
    finally:
        f.stop()


def _metrics(f: Flower) -> str:
    response = f.anonymous.get("/metrics")
    return response.text if response.status_code == 200 else ""


def _failover_job(emulator: Any, send: Callable[[dict[str, Any]], Any]) -> str:
    """Run a failover job whose first provider is down; return its id once it has answered."""
    emulator.set_down("claude")
    job = send({"text": EMAIL.text, "strategy": "failover", "providers": ORDER, "use_cache": False})
    assert job.get(timeout=15)["chosen"] == "openai"
    return str(job.id)


def _rejected_job(send: Callable[[dict[str, Any]], Any]) -> str:
    """Run a job the entry task refuses (its Flower record keeps the entry task's kwargs)."""
    job = send({"text": EMAIL.text, "strategy": "coin_flip"})
    with pytest.raises(InvalidRequestError, match="strategy"):
        job.get(timeout=15)
    return str(job.id)


def _settled(f: Flower, want: dict[str, str]) -> dict[str, dict[str, Any]] | None:
    """Flower's records of the tasks in ``want`` once each has its wanted state, else None."""
    seen = {task_id: f.task(task_id) for task_id in want}
    if all((info := seen[task_id]) and info["state"] == state for task_id, state in want.items()):
        return {k: v for k, v in seen.items() if v}
    return None


def _everything(f: Flower, job_id: str, *task_ids: str) -> str:
    """Every JSON body Flower serves about a job (list, search, per-task info), concatenated."""
    bodies = [f.api("/api/tasks")[1], f.api("/api/tasks", search=job_id)[1]]
    bodies += [f.api(f"/api/task/info/{t}")[1] for t in (job_id, *task_ids)]
    return "\n".join(bodies)


def _assert_no_email_text(raw: str) -> None:
    assert [s for s in BODY_SNIPPETS if s in raw] == [], "Flower shows text of the email"


def _own(fleet: Fleet) -> Callable[[dict[str, Any]], Any]:
    return lambda kwargs: submit(fleet.app, "quorum.extract", kwargs)


def test_flower_shows_job_and_provider_calls_without_email_text(flower: Flower, clean: Fleet, emulator):
    job_id = _failover_job(emulator, _own(clean))
    want = {job_id: "SUCCESS", hop_id(job_id, 0): "FAILURE", hop_id(job_id, 1): "SUCCESS"}
    tasks = _until("final states of the job and its calls", lambda: _settled(flower, want), 10, flower.log)

    job, failed, served = tasks[job_id], tasks[hop_id(job_id, 0)], tasks[hop_id(job_id, 1)]
    assert job["uuid"] == job_id
    # the job id is the entry task's alone; the call that answered sent its final state for it
    assert job["name"] == "quorum.extract"
    assert "'chosen': 'openai'" in job["result"]
    # the call's own outcome, previewed as Celery's tracer did (a worker builds it with repr)
    assert served["result"].startswith("{") and "'provider': 'openai'" in served["result"]
    assert len(served["result"]) <= 1024 and len(job["result"]) <= 1024
    listed, _ = flower.api("/api/tasks", taskname="quorum.extract", state="SUCCESS")
    assert job_id in listed
    mine = {t["name"] for t in flower.api("/api/tasks", search=job_id)[0].values()}
    assert mine == {"quorum.extract", "quorum.call"}  # no finish task
    assert failed["name"] == served["name"] == "quorum.call"
    assert "OverloadedError" in failed["exception"] and failed["traceback"]
    assert failed["args"] == f"({job_id!r}, 'claude', failover)" and failed["kwargs"] == "{}"
    assert {failed["worker"].split("@")[0], served["worker"].split("@")[0]} <= {"w1", "w2"}
    listed, _ = flower.api("/api/tasks", taskname="quorum.call", state="FAILURE")
    assert hop_id(job_id, 0) in listed
    _assert_no_email_text(_everything(flower, job_id, hop_id(job_id, 0), hop_id(job_id, 1)))


def test_flower_shows_a_refused_job_with_its_text_redacted(flower: Flower, clean: Fleet):
    job_id = _rejected_job(_own(clean))
    job = _until("the refused job", lambda: _settled(flower, {job_id: "FAILURE"}), 10, flower.log)[job_id]
    assert job["name"] == "quorum.extract" and "InvalidRequestError" in job["exception"]
    assert text_repr(EMAIL.text) in job["kwargs"]  # length and hash instead of the body
    _assert_no_email_text(_everything(flower, job_id))


def test_flower_requires_auth_but_metrics_and_healthcheck_are_open(flower: Flower):
    for path in ("/api/tasks", "/api/workers", "/api/task/info/x", "/api/task/types", "/tasks", "/"):
        assert flower.anonymous.get(path).status_code == 401, path
    assert flower.anonymous.post("/api/task/async-apply/quorum.extract", json={}).status_code == 401
    wrong = httpx.get(f"{flower.url}/api/tasks", auth=(USER, "wrong"), timeout=5.0)
    assert wrong.status_code == 401
    # Flower 2.2 serves these two without authentication: keep it on loopback / a private network.
    metrics = flower.anonymous.get("/metrics")
    assert metrics.status_code == 200 and "flower_events_total" in metrics.text
    assert 'flower_worker_online{worker="w' in metrics.text
    assert flower.anonymous.get("/healthcheck").text == "OK"


def test_foreign_producer_text_stays_out_of_flower(flower: Flower, clean: Fleet):
    """A producer that sets no kwargsrepr: the worker's request class redacts the text itself."""
    producer = Celery(broker=clean.redis_url, backend=clean.redis_url)  # no Quorum import, no kwargsrepr
    try:
        job_id = _rejected_job(lambda kw: producer.send_task("quorum.extract", kwargs=kw, queue="quorum"))
        _until("the refused job", lambda: _settled(flower, {job_id: "FAILURE"}), 10, flower.log)
        raw = _everything(flower, job_id)
    finally:
        producer.close()
    _assert_no_email_text(raw)
    assert text_repr(EMAIL.text) in raw


def test_worker_page_does_not_show_a_scheduled_jobs_text(flower: Flower, clean: Fleet):
    """A job waiting for its ETA sits in a worker's timer; Flower's worker view lists it."""
    kwargs = {"text": EMAIL.text, "strategy": "coin_flip"}  # refused at once when it runs: no provider call
    job = clean.app.send_task(
        "quorum.extract", kwargs=kwargs, kwargsrepr=redacted_kwargs(kwargs), argsrepr="()", countdown=4
    )
    try:
        names = list(flower.api("/api/workers", refresh=1)[0])

        def scheduled_somewhere() -> str | None:
            bodies = [flower.api("/api/workers", workername=n, refresh=1)[1] for n in names]
            return next((b for b in bodies if job.id in b), None)

        raw = _until("the scheduled job on a worker page", scheduled_somewhere, 3, flower.log)
    finally:
        with pytest.raises(InvalidRequestError):
            job.get(timeout=15)  # let it run out here, so no ETA message outlives this module
    _assert_no_email_text(raw)


def test_flower_names_failed_chord_and_generation_jobs_after_their_entry_task(
    flower: Flower, clean: Fleet, emulator
):
    for name in ORDER:
        emulator.set_down(name)
    failed = _own(clean)({"text": EMAIL.text, "strategy": "failover", "providers": ORDER, "use_cache": False})
    with pytest.raises(AllProvidersFailedError):
        failed.get(timeout=15)
    for name in ORDER:
        emulator.set_down(name, False)
    merged = _own(clean)(
        {"text": EMAIL.text, "strategy": "consensus", "providers": ORDER, "use_cache": False}
    )
    assert merged.get(timeout=15)["fields"]
    generated = submit(clean.app, "quorum.generate", {"prompt": "Name a colour.", "providers": ORDER})
    assert generated.get(timeout=15)["text"]
    want = {failed.id: "FAILURE", merged.id: "SUCCESS", generated.id: "SUCCESS"}
    tasks = _until("the jobs' final states", lambda: _settled(flower, want), 10, flower.log)
    assert tasks[failed.id]["name"] == tasks[merged.id]["name"] == "quorum.extract"
    assert tasks[generated.id]["name"] == "quorum.generate"
    assert "AllProvidersFailedError" in tasks[failed.id]["exception"]
    # the chord body ran inside the call that completed the chord: no task of its own
    assert flower.task(merge_id(merged.id)) is None
