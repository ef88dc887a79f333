"""The canvases of a generation job, built without a broker: deterministic ids derived from the
job id (never the job id itself: it is the entry task's), signed hops, and no text in Flower's
reprs."""

from __future__ import annotations

from celery import chord

from orchestration.config import Settings, default_providers
from orchestration.generation import (
    FollowUp,
    JudgeRound,
    NextCandidate,
    Progress,
    after_candidates,
    parse_generation_request,
    prepare_generate,
)
from orchestration.models import Attempt, ProviderResult
from orchestration.state import FleetSetting
from workers.canvas import InlineBody
from workers.generation_tasks import step_canvas
from workers.signing import valid

KEY = b"unit-test-fleet-secret-0123456789"

SECRET = "Write the launch plan for project NIGHTJAR"
THREE = ["claude", "openai", "gemini"]


def spec(**kw):
    kw = {"prompt": SECRET, "providers": THREE, **kw}
    request = parse_generation_request((), kw)
    settings = Settings(providers=default_providers())
    return prepare_generate(request, job_id="job-9", settings=settings, fleet=FleetSetting(), now=0.0)


def answered(label: str, text: str) -> Attempt:
    result = ProviderResult(provider=label, model="m", text=text)
    return Attempt(provider=label, label=label, ok=True, result=result)


def reprs(sig) -> str:
    return f"{sig.options.get('argsrepr')} {sig.options.get('kwargsrepr')}"


def signed_ok(sig) -> bool:
    return valid(KEY, sig.task, sig.options.get("task_id"), sig.kwargs)


def test_judge_round_is_a_chord_whose_body_has_its_own_id():
    s = spec(selector="tournament")
    texts = [f"{SECRET}: answer {i}" for i in range(3)]
    progress = Progress(attempts=[answered(p, t) for p, t in zip(THREE, texts, strict=True)])
    step = after_candidates(s, progress, 0.0)
    assert isinstance(step, JudgeRound)
    canvas = step_canvas(KEY, s, progress, step)
    assert isinstance(canvas, chord)
    header = list(canvas.tasks.tasks) if hasattr(canvas.tasks, "tasks") else list(canvas.tasks)
    assert [t.options["task_id"] for t in header] == ["job-9.r0.j0"]
    assert canvas.body.task == "quorum.gen_round"
    assert canvas.body.kwargs["job_id"] == "job-9" and "spec" not in canvas.body.kwargs
    canvas.freeze()
    assert canvas.body.id == "job-9.r0"
    # the body runs inline in the judge call that completes the chord, without a task id: signed for none
    assert isinstance(canvas.body, InlineBody) and valid(KEY, "quorum.gen_round", None, canvas.body.kwargs)
    assert not signed_ok(canvas.body)  # nor can its arguments be replayed under its id
    for sig in [*header, canvas.body]:
        assert "NIGHTJAR" not in reprs(sig) and "answer" not in reprs(sig)
    assert all(signed_ok(sig) for sig in header)


def test_follow_up_and_next_candidate_are_signed_chains_with_ids_of_their_own():
    s = spec(selector="hybrid_merge", quality_threshold=0.9)
    progress = Progress(attempts=[answered("claude", "a b c"), answered("openai", "a b d")])
    step = after_candidates(s, progress, 0.0)
    assert isinstance(step, FollowUp)
    for st, first_id, last, last_id in (
        (step, "job-9.agg", "quorum.gen_finish", "job-9.f"),
        (NextCandidate(2), "job-9.c2", "quorum.gen_step", "job-9.st2"),
    ):
        canvas = step_canvas(KEY, s, progress, st)
        assert len(canvas.tasks) == 2  # a chain: the call, then the hop
        first, then = canvas.tasks
        assert first.task == "quorum.gen_call" and first.options["task_id"] == first_id
        assert then.task == last and "NIGHTJAR" not in reprs(first) + reprs(then)
        assert signed_ok(first) and signed_ok(then)
        canvas.freeze()
        assert then.id == last_id and first.id == first_id
