"""The emulator through the REAL SDKs over real HTTP: answer shapes, usage, each injected fault
raising the SDK's own class, down/up switching, counters and concurrency. No mocks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from emulator.admin import EmulatorHandle
from emulator.wire import WireError
from emulator.wire.gemini import GeminiWire
from orchestration.prompts import (
    EXTRACTION_SYSTEM,
    GENERATION_SYSTEM,
    JUDGE_SYSTEM,
    TOOL_NAME,
    extraction_prompt,
    generation_prompt,
    judge_prompt,
)
from orchestration.schemas import EMAIL_ENTITIES, output_schema, parse_output
from stack.local import start_emulator

KEY = "test-key"
SCHEMA = output_schema(EMAIL_ENTITIES)
EMAIL = (
    "Hi Dana,\n\nBrightloop Robotics would like to go ahead with the pilot with Northwind "
    "Ventures; we propose to sign on 2025-03-14.\n\nBest,\nMaria Okafor\nCEO, Brightloop Robotics"
)
LABELS = {
    "person_in_charge": "Maria Okafor",
    "startup_name": "Brightloop Robotics",
    "partner_org": "Northwind Ventures",
    "details": "pilot with Northwind Ventures",
    "date": "2025-03-14",
}
# Provider names used in this module, one per wire format.
CLAUDE, OPENAI, GEMINI = "claude", "openai", "gemini"


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """One emulator for the module with a one-record labelled data set and no noise."""
    data = Path(tmp_path_factory.mktemp("emu")) / "emails.jsonl"
    record = {"id": "t1", "lang": "en", "text": EMAIL, "labels": LABELS, "distractors": ["Dana"]}
    data.write_text(json.dumps(record) + "\n", encoding="utf-8")
    profile = {"seed": 7, "dataset": str(data), "defaults": {"latency_median_ms": 2, "latency_sigma": 0}}
    with start_emulator(profile) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _reset(emu: EmulatorHandle) -> None:
    emu.reset()


def claude(emu: EmulatorHandle, timeout: float = 5.0) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key=KEY, base_url=emu.base_url("anthropic", CLAUDE), max_retries=0, timeout=timeout
    )


def oai(emu: EmulatorHandle, timeout: float = 5.0, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=emu.base_url("openai", OPENAI), max_retries=0, timeout=timeout)


def gem(emu: EmulatorHandle, key: str = KEY) -> genai.Client:
    opts = types.HttpOptions(
        base_url=emu.base_url("gemini", GEMINI), retry_options=types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key=key, http_options=opts)


def extract_claude(emu: EmulatorHandle, timeout: float = 5.0) -> dict[str, Any]:
    msg = claude(emu, timeout).messages.create(
        model="claude-test", max_tokens=1024, system=EXTRACTION_SYSTEM,
        messages=[{"role": "user", "content": extraction_prompt(EMAIL, EMAIL_ENTITIES)}],
        tools=[{"name": TOOL_NAME, "input_schema": SCHEMA}],
        tool_choice={"type": "tool", "name": TOOL_NAME},
    )  # fmt: skip
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "claude-test"
    assert msg.stop_reason == "tool_use" and msg.id.startswith("msg_")
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    block = msg.content[0]
    assert block.type == "tool_use" and block.name == TOOL_NAME
    return dict(block.input)


def extract_openai(emu: EmulatorHandle, timeout: float = 5.0) -> dict[str, Any]:
    completion = oai(emu, timeout).chat.completions.create(
        model="gpt-test",
        messages=[{"role": "system", "content": EXTRACTION_SYSTEM},
                  {"role": "user", "content": extraction_prompt(EMAIL, EMAIL_ENTITIES)}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": TOOL_NAME, "schema": SCHEMA, "strict": True}},
    )  # fmt: skip
    assert completion.object == "chat.completion" and completion.model == "gpt-test"
    usage = completion.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
    assert completion.choices[0].finish_reason == "stop"
    return json.loads(completion.choices[0].message.content or "")  # type: ignore[no-any-return]


def extract_gemini(emu: EmulatorHandle, timeout: float = 5.0) -> dict[str, Any]:
    client = gem(emu)  # keep a reference: a collected genai Client closes its HTTP client
    response = client.models.generate_content(
        model="gemini-test",
        contents=extraction_prompt(EMAIL, EMAIL_ENTITIES),
        config=types.GenerateContentConfig(
            system_instruction=EXTRACTION_SYSTEM, response_mime_type="application/json",
            response_json_schema=SCHEMA, temperature=0.0,
            http_options=types.HttpOptions(timeout=int(timeout * 1000)),
        ),
    )  # fmt: skip
    meta = response.usage_metadata
    assert meta is not None and meta.prompt_token_count and meta.candidates_token_count
    assert meta.total_token_count == meta.prompt_token_count + meta.candidates_token_count
    assert response.model_version == "gemini-test"
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.STOP
    return json.loads(response.text or "")  # type: ignore[no-any-return]


EXTRACTORS: dict[str, Callable[..., dict[str, Any]]] = {
    CLAUDE: extract_claude,
    OPENAI: extract_openai,
    GEMINI: extract_gemini,
}


@pytest.mark.parametrize("provider", sorted(EXTRACTORS))
def test_extraction_answers_labels_through_each_sdk(emu: EmulatorHandle, provider: str) -> None:
    data = EXTRACTORS[provider](emu)
    fields = parse_output(data, EMAIL_ENTITIES, provider).fields
    assert {k: v.value for k, v in fields.items()} == LABELS
    assert all(0.5 <= v.confidence <= 1 for v in fields.values())
    assert emu.requests(provider) == 1


def test_generation_is_free_text(emu: EmulatorHandle) -> None:
    prompt = generation_prompt("Write a date helper.", ["parse ISO dates", "handle time zones"], "python")
    msg = claude(emu).messages.create(
        model="m", max_tokens=2048, system=GENERATION_SYSTEM, messages=[{"role": "user", "content": prompt}]
    )
    assert msg.stop_reason == "end_turn" and msg.content[0].type == "text"
    completion = oai(emu).chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
    g = gem(emu)
    response = g.models.generate_content(model="m", contents=prompt)
    for text in (msg.content[0].text, completion.choices[0].message.content, response.text):
        assert text is not None and "parse ISO dates" in text and "handle time zones" in text


def test_free_text_answers_are_logged_as_served(emu: EmulatorHandle) -> None:
    """``GET /_admin/answers/{p}`` returns each free-text answer the SDK got, with its prompt and
    temperature (what a benchmark grades candidates by); extraction answers are not logged."""
    prompt = generation_prompt("Write a date helper.", ["parse ISO dates"], "python")
    client = oai(emu)
    got = [
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}], **extra)
        .choices[0]
        .message.content
        for extra in ({}, {"temperature": 0.7})
    ]
    extract_openai(emu)
    log = emu.answers(OPENAI)
    served = [(e["prompt"], e["temperature"], e["text"]) for e in log]
    assert served == [(prompt, None, got[0]), (prompt, 0.7, got[1])]
    assert emu.answers(CLAUDE) == []
    with pytest.raises(httpx.HTTPStatusError, match="404"):
        emu.answers("no-such-provider")
    emu.reset()
    assert emu.answers(OPENAI) == []


def test_gemini_v1beta_and_unprefixed_aliases(emu: EmulatorHandle) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    with httpx.Client(base_url=emu.url, timeout=5) as http:
        for path in ("/gemini/v1beta/models/g:generateContent", "/v1beta/models/g:generateContent",
                     "/v1/models/g:generateContent"):  # fmt: skip
            r = http.post(path, json=body, params={"key": KEY})
            assert r.status_code == 200, path
            assert r.json()["candidates"][0]["content"]["parts"][0]["text"]
        hi = [{"role": "user", "content": "hi"}]
        r = http.post("/v1/chat/completions", json={"model": "m", "messages": hi},
                      headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
        assert r.json()["object"] == "chat.completion"
        r = http.post("/v1/messages", headers={"x-api-key": KEY},
                      json={"model": "m", "max_tokens": 5, "messages": hi})  # fmt: skip
        assert r.json()["type"] == "message"
        assert (
            http.post("/gemini/v2/models/g:generateContent", json=body, params={"key": KEY}).status_code
            == 404
        )
    assert emu.requests("gemini") == 3 and emu.requests("openai") == 1 and emu.requests("anthropic") == 1


def _gemini_body(snake: bool, max_tokens: int = 1024) -> dict[str, Any]:
    """An extraction request in the REST shape, members spelled lowerCamelCase or snake_case
    (the real API takes both: protobuf JSON; LiteLLM sends snake_case)."""
    config = {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA,
              "maxOutputTokens": max_tokens, "temperature": 0.0, "topP": 1.0}  # fmt: skip
    body = {
        "contents": [{"role": "user", "parts": [{"text": extraction_prompt(EMAIL, EMAIL_ENTITIES)}]}],
        "systemInstruction": {"parts": [{"text": EXTRACTION_SYSTEM}]},
        "generationConfig": config,
    }
    if not snake:
        return body

    def snake_case(name: str) -> str:
        return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)

    body["generationConfig"] = {snake_case(k): v for k, v in config.items()}
    return {snake_case(k): v for k, v in body.items()}


def test_gemini_parse_reads_snake_case_like_camel_case() -> None:
    wire = GeminiWire()
    snake = _gemini_body(snake=True, max_tokens=77)
    assert "generation_config" in snake and "response_json_schema" in snake["generation_config"]
    camel_call = wire.parse(_gemini_body(snake=False, max_tokens=77), {"model": "g"})
    snake_call = wire.parse(snake, {"model": "g"})
    assert snake_call == camel_call
    assert snake_call.schema == SCHEMA and snake_call.system == EXTRACTION_SYSTEM
    assert snake_call.max_tokens == 77 and snake_call.temperature == 0.0
    # responseSchema (the OpenAPI-subset Schema message) too, under either name and nesting
    for config in ({"response_schema": SCHEMA}, {"responseSchema": SCHEMA}):
        for key in ("generation_config", "generationConfig"):
            call = wire.parse({"contents": snake["contents"], key: config}, {})
            assert call.schema == SCHEMA
    with pytest.raises(WireError):
        wire.parse({"contents": snake["contents"], "generation_config": {"max_output_tokens": 0}}, {})
    with pytest.raises(WireError):
        wire.parse({"contents": snake["contents"], "generation_config": {"response_json_schema": ["x"]}}, {})


@pytest.mark.parametrize("snake", [False, True], ids=["camelCase", "snake_case"])
def test_gemini_rest_extraction_in_either_spelling(emu: EmulatorHandle, snake: bool) -> None:
    path = "/gemini/v1beta/models/gemini-test:generateContent"
    body = _gemini_body(snake)
    system_key = "system_instruction" if snake else "systemInstruction"
    with httpx.Client(base_url=emu.url, timeout=5, headers={"x-goog-api-key": KEY}) as http:

        def post(request: dict[str, Any]) -> dict[str, Any]:
            r = http.post(path, json=request)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        full = post(body)
        no_system = post({k: v for k, v in body.items() if k != system_key})
        cut = post(_gemini_body(snake, max_tokens=3))
    candidate = full["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    data = json.loads(candidate["content"]["parts"][0]["text"])  # the schema was read: JSON
    fields = parse_output(data, EMAIL_ENTITIES, GEMINI).fields
    assert {k: v.value for k, v in fields.items()} == LABELS
    # the system instruction was read: it counts in the prompt tokens
    assert full["usageMetadata"]["promptTokenCount"] > no_system["usageMetadata"]["promptTokenCount"]
    # the output limit was read
    assert cut["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert cut["usageMetadata"]["candidatesTokenCount"] == 3


# --------------------------------------------------------------------------- faults

STATUS_CASES: list[tuple[str, int, type[Exception], type[Exception], type[Exception]]] = [
    ("rate_limit", 429, anthropic.RateLimitError, openai.RateLimitError, genai_errors.ClientError),
    ("server", 500, anthropic.InternalServerError, openai.InternalServerError, genai_errors.ServerError),
    ("unavailable", 503, anthropic.ServiceUnavailableError, openai.InternalServerError,
     genai_errors.ServerError),
    ("overloaded", 503, anthropic.OverloadedError, openai.InternalServerError, genai_errors.ServerError),
    ("bad_request", 400, anthropic.BadRequestError, openai.BadRequestError, genai_errors.ClientError),
    ("auth", 401, anthropic.AuthenticationError, openai.AuthenticationError, genai_errors.ClientError),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "status", "a_cls", "o_cls", "g_cls"), STATUS_CASES, ids=[c[0] for c in STATUS_CASES]
)
def test_status_faults_raise_each_sdks_class(
    emu: EmulatorHandle, kind: str, status: int, a_cls: type[Exception], o_cls: type[Exception],
    g_cls: type[Exception],
) -> None:  # fmt: skip
    for provider in EXTRACTORS:
        emu.configure(provider, error_rate=1.0, errors={kind: 1}, retry_after_s=3)
    with pytest.raises(a_cls) as a_err:
        extract_claude(emu)
    assert a_err.value.status_code == (529 if kind == "overloaded" else status)  # type: ignore[attr-defined]
    with pytest.raises(o_cls) as o_err:
        extract_openai(emu)
    assert o_err.value.status_code == status  # type: ignore[attr-defined]
    with pytest.raises(g_cls) as g_err:
        extract_gemini(emu)
    assert g_err.value.code == status  # type: ignore[attr-defined]
    if kind == "rate_limit":
        assert a_err.value.response.headers["retry-after"] == "3"  # type: ignore[attr-defined]
        assert o_err.value.response.headers["retry-after"] == "3"  # type: ignore[attr-defined]
        assert g_err.value.status == "RESOURCE_EXHAUSTED"  # type: ignore[attr-defined]
        assert a_err.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[attr-defined,index]
        assert o_err.value.code == "rate_limit_exceeded"  # type: ignore[attr-defined]
    for provider in EXTRACTORS:
        assert emu.requests(provider) == 1
        assert emu.errors(provider) == {kind: 1}


def test_reset_is_a_connection_error(emu: EmulatorHandle) -> None:
    for provider in EXTRACTORS:
        emu.configure(provider, error_rate=1.0, errors={"reset": 1})
    with pytest.raises(anthropic.APIConnectionError):
        extract_claude(emu)
    with pytest.raises(openai.APIConnectionError):
        extract_openai(emu)
    with pytest.raises(httpx2.TransportError):  # google-genai lets httpx2's errors escape
        extract_gemini(emu)
    stats = emu.stats()
    assert all(stats[p]["errors"] == {"reset": 1} and stats[p]["in_flight"] == 0 for p in EXTRACTORS)


def test_hang_times_out_and_is_released(emu: EmulatorHandle) -> None:
    for provider in EXTRACTORS:
        emu.configure(provider, error_rate=1.0, errors={"hang": 1})
    with pytest.raises(anthropic.APITimeoutError):
        extract_claude(emu, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        extract_openai(emu, timeout=0.3)
    with pytest.raises(httpx2.TimeoutException):
        extract_gemini(emu, timeout=0.3)
    stats = emu.stats()
    assert all(stats[p]["requests"] == 1 and stats[p]["errors"] == {"hang": 1} for p in EXTRACTORS)
    # The hung handlers notice the client has gone and stop (600 s hang_s notwithstanding).
    for _ in range(50):
        if all(s["in_flight"] == 0 for s in emu.stats().values()):
            break
        time.sleep(0.05)
    assert all(s["in_flight"] == 0 for s in emu.stats().values())


def test_malformed_answers_are_spoilt_and_schema_faults_noted(emu: EmulatorHandle) -> None:
    for provider in EXTRACTORS:
        emu.configure(provider, error_rate=1.0, errors={"malformed": 1})
    with pytest.raises(json.JSONDecodeError):
        extract_openai(emu)
    with pytest.raises(json.JSONDecodeError):
        extract_gemini(emu)
    user = [{"role": "user", "content": extraction_prompt(EMAIL, EMAIL_ENTITIES)}]
    msg = claude(emu).messages.create(  # Claude "answers in text" instead of calling the tool
        model="m", max_tokens=1024, messages=user,
        tools=[{"name": TOOL_NAME, "input_schema": SCHEMA}], tool_choice={"type": "tool", "name": TOOL_NAME},
    )  # fmt: skip
    assert msg.content[0].type == "text"
    with pytest.raises(json.JSONDecodeError):
        json.loads(msg.content[0].text)
    for provider, extractor in EXTRACTORS.items():  # a weak answer: kept, with what was wrong noted
        emu.configure(provider, errors={"schema": 1})
        parsed = parse_output(extractor(emu), EMAIL_ENTITIES, provider)
        assert parsed.notes.dropped or list(parsed.notes.clamped.values()) == ["7"]
        assert len(parsed.fields) + len(parsed.notes.dropped) == len(EMAIL_ENTITIES["properties"])
        assert emu.errors(provider) == {"malformed": 1, "schema": 1}


@pytest.mark.parametrize("provider", sorted(EXTRACTORS))
def test_missing_and_rejected_keys_get_401(emu: EmulatorHandle, provider: str) -> None:
    if provider == CLAUDE:
        client = anthropic.Anthropic(
            api_key="bad-key", base_url=emu.base_url("anthropic", CLAUDE), max_retries=0
        )
        with pytest.raises(anthropic.AuthenticationError) as info:
            client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert "bad-key" not in str(info.value)
    elif provider == OPENAI:
        with pytest.raises(openai.AuthenticationError) as o_info:
            oai(emu, key="bad-key").chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
        assert "bad-key" not in str(o_info.value)
    else:
        client = gem(emu, key="bad-key")
        with pytest.raises(genai_errors.ClientError) as g_info:
            client.models.generate_content(model="m", contents="hi")
        assert g_info.value.code == 401 and "bad-key" not in str(g_info.value)
    with httpx.Client(base_url=emu.url) as http:  # no key at all
        path = {CLAUDE: "/claude/v1/messages", OPENAI: "/openai/v1/chat/completions",
                GEMINI: "/gemini/v1/models/m:generateContent"}[provider]  # fmt: skip
        assert http.post(path, json={}).status_code == 401
    assert emu.errors(provider) == {"auth": 2}


# --------------------------------------------------------------------------- control


def test_down_and_up_while_running(emu: EmulatorHandle) -> None:
    emu.set_down(OPENAI)
    with pytest.raises(openai.InternalServerError) as info:
        extract_openai(emu)
    assert info.value.status_code == 503
    emu.set_down(CLAUDE)
    with pytest.raises(anthropic.ServiceUnavailableError):
        extract_claude(emu)
    assert extract_gemini(emu)  # others unaffected
    emu.set_down(OPENAI, down=False)
    emu.set_down(CLAUDE, down=False)
    assert extract_openai(emu) and extract_claude(emu)
    stats = emu.stats()
    assert stats[OPENAI]["requests"] == 2 and stats[OPENAI]["errors"] == {"down": 1}
    assert stats[GEMINI]["errors"] == {}


def test_counters_overrides_and_reset(emu: EmulatorHandle) -> None:
    for _ in range(3):
        extract_openai(emu)
    assert emu.requests(OPENAI) == 3 and emu.requests(CLAUDE) == 0
    profile = emu.configure(OPENAI, latency_median_ms=1, noise={"drop": 1.0})
    assert profile["latency_median_ms"] == 1 and profile["noise"]["drop"] == 1.0
    assert all(v["value"] is None for v in extract_openai(emu).values())
    with pytest.raises(httpx.HTTPStatusError):
        emu.configure(OPENAI, error_rate=2)  # invalid overrides are refused (400)
    emu.reset()
    assert emu.stats() == {}
    assert {k: v["value"] for k, v in extract_openai(emu).items()} == LABELS


def test_seed_makes_answers_reproducible(emu: EmulatorHandle) -> None:
    def run() -> list[Any]:
        emu.configure(GEMINI, seed=99, noise={"wrong": 0.3, "near_miss": 0.3})
        return [extract_gemini(emu) for _ in range(4)]

    first, second = run(), run()
    assert first == second
    assert len({json.dumps(a, sort_keys=True) for a in first}) > 1  # noise did vary between calls


def test_judge_prefers_the_candidate_without_defects(emu: EmulatorHandle) -> None:
    task = generation_prompt("Write a helper.", ["parse ISO dates"], "python")
    good = "def parse():\n    # parse ISO dates\n    return 1\n"
    bad = "def parse(\n    # parse ISO dates\n"
    emu.configure(OPENAI, judge_error_rate=0.0)
    client = oai(emu)
    for a, b, winner in ((good, bad, "A"), (bad, good, "B")):
        completion = client.chat.completions.create(
            model="m", messages=[{"role": "system", "content": JUDGE_SYSTEM},
                                 {"role": "user", "content": judge_prompt(task, a, b)}],
        )  # fmt: skip
        assert json.loads(completion.choices[0].message.content or "")["winner"] == winner


def test_many_concurrent_slow_requests_all_complete(emu: EmulatorHandle) -> None:
    for provider in EXTRACTORS:
        emu.configure(provider, latency_median_ms=300, latency_sigma=0)
    prompt = [{"role": "user", "content": "hello"}]

    async def main() -> list[Any]:
        o = openai.AsyncOpenAI(
            api_key=KEY, base_url=emu.base_url("openai", OPENAI), max_retries=0, timeout=30
        )
        a = anthropic.AsyncAnthropic(api_key=KEY, base_url=emu.base_url("anthropic", CLAUDE), max_retries=0,
                                     timeout=30)  # fmt: skip
        g = gem(emu)

        async def one(i: int) -> int:
            if i % 3 == 0:
                r = await o.chat.completions.create(model="m", messages=prompt)  # type: ignore[arg-type]
                return r.usage.total_tokens if r.usage else 0
            if i % 3 == 1:
                m = await a.messages.create(model="m", max_tokens=64, messages=prompt)  # type: ignore[arg-type]
                return m.usage.output_tokens
            resp = await g.aio.models.generate_content(model="m", contents="hello")
            return resp.usage_metadata.total_token_count or 0 if resp.usage_metadata else 0

        try:
            return await asyncio.gather(*(one(i) for i in range(240)))
        finally:
            await o.close()
            await a.close()

    results = asyncio.run(main())
    assert len(results) == 240 and all(r > 0 for r in results)
    stats = emu.stats()
    assert sum(stats[p]["requests"] for p in EXTRACTORS) == 240
    assert all(stats[p]["in_flight"] == 0 and stats[p]["errors"] == {} for p in EXTRACTORS)
