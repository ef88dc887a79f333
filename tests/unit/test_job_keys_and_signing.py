"""Per-job keys derived from validated job ids, the spec stored once per job, the MAC of internal
messages, the fleet secret's sources, and cache keys that name what produced an answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from orchestration.config import Settings, default_providers
from orchestration.errors import ConfigError
from orchestration.state import cache
from orchestration.state.job_records import (
    claim_publication,
    held_by_other,
    load_spec,
    request_digest,
    spec_key,
    store_spec,
    valid_job_id,
)
from workers.signing import MAC_FIELD, fleet_secret, mac, signed, valid

KEY = b"unit-test-fleet-secret-0123456789"


@pytest.mark.parametrize("job_id", ["4f1c2d3e-0000-4000-8000-000000000001", "order_17", "a-b_c"])
def test_job_ids_that_may_name_keys(job_id: str) -> None:
    assert valid_job_id(job_id)
    assert spec_key("quorum:", job_id) == f"quorum:job:{{{job_id}}}:spec"


@pytest.mark.parametrize(
    "job_id", ["", "x" * 129, "job.h0", "job:error", "{quorum}", "a b", "quorum\n", None, 7]
)
def test_job_ids_shaped_like_internal_ids_or_keys_are_refused(job_id: object) -> None:
    assert not valid_job_id(job_id)
    with pytest.raises(ValueError):
        spec_key("quorum:", job_id)  # type: ignore[arg-type]


def test_the_spec_is_stored_once_and_a_job_id_serves_one_request(valkey_redis: redis.Redis) -> None:
    redis_client = valkey_redis  # the spec is compressed: a bytes client (the workers' state client)
    spec = '{"text": "Grüße – ' + "x" * 5000 + '"}'
    digest = request_digest((), {"text": "a"})
    assert store_spec(redis_client, "quorum:", "job-1", digest, spec, 60) is None
    assert load_spec(redis_client, "quorum:", "job-1") == spec
    assert 0 < redis_client.ttl(spec_key("quorum:", "job-1")) <= 60
    # the same request again (a redelivered entry) gets the stored spec back
    assert store_spec(redis_client, "quorum:", "job-1", digest, '{"text": "other"}', 60) == spec
    assert not held_by_other(redis_client, "quorum:", "job-1", digest)
    # another request with the same id is refused and changes nothing
    other = request_digest((), {"text": "b"})
    assert held_by_other(redis_client, "quorum:", "job-1", other)
    with pytest.raises(KeyError):
        store_spec(redis_client, "quorum:", "job-1", other, '{"text": "forged"}', 60)
    assert load_spec(redis_client, "quorum:", "job-1") == spec
    # once answered, the id stays taken even after its spec expired
    redis_client.delete(spec_key("quorum:", "job-1"))
    assert claim_publication(redis_client, "quorum:", "job-1", "call:job-1.h0", ttl_s=86_400)
    assert redis_client.ttl("quorum:job:{job-1}:published") > 3600
    assert held_by_other(redis_client, "quorum:", "job-1", digest)


def test_mac_binds_name_id_and_arguments() -> None:
    kwargs = {"job_id": "j", "index": 0, "attempts": [{"ok": False, "latency_ms": 1.5}]}
    good = {**kwargs, MAC_FIELD: mac(KEY, "quorum.call", "j.h0", kwargs)}
    assert valid(KEY, "quorum.call", "j.h0", good)
    assert not valid(KEY, "quorum.call", "j.h1", good)  # another task id
    assert not valid(KEY, "quorum.merge", "j.h0", good)  # another task
    assert not valid(KEY, "quorum.call", "j.h0", {**good, "index": 1})  # other arguments
    assert not valid(b"another-secret-0123456789abcdef", "quorum.call", "j.h0", good)
    assert not valid(KEY, "quorum.call", "j.h0", kwargs)  # none at all
    assert not valid(KEY, "quorum.call", "j.h0", {**kwargs, MAC_FIELD: 42})


def test_a_signed_signature_carries_its_mac_and_shows_no_arguments() -> None:
    sig = signed(None, KEY, "quorum.merge", {"job_id": "j", "skipped": []}, task_id="j.m")  # type: ignore[arg-type]
    assert sig.options["task_id"] == "j.m" and sig.options["kwargsrepr"] == "{}"
    assert valid(KEY, "quorum.merge", "j.m", sig.kwargs)
    # sent to the queue the workers consume, without Celery's per-send declaration of it
    assert sig.options["declare"] == []


def test_fleet_secret_sources(tmp_path: Path) -> None:
    assert fleet_secret(Settings(fleet_secret="s" * 32), None) == b"s" * 32
    path = tmp_path / "secret"
    path.write_text("f" * 40 + "\n")
    assert fleet_secret(Settings(fleet_secret_file=path), None) == b"f" * 40
    with pytest.raises(ConfigError, match="QUORUM_FLEET_SECRET"):
        fleet_secret(Settings(), "redis://127.0.0.1:1/0")  # a real fleet without one: refused
    with pytest.raises(ConfigError, match="shorter"):
        fleet_secret(Settings(fleet_secret="short"), None)
    with pytest.raises(ConfigError, match="cannot read"):
        fleet_secret(Settings(fleet_secret_file=tmp_path / "missing"), None)


def test_an_emulated_answer_never_answers_a_real_request() -> None:
    real = Settings(providers=default_providers())
    emulated = Settings(providers=default_providers(), emulator_url="http://127.0.0.1:8900")

    def key(settings: Settings) -> str:
        return cache.cache_key(
            "quorum:", "extract", "an email", {}, "failover", [], cache.answer_sources(settings, ["openai"])
        )

    assert key(real) != key(emulated)
    other_model = Settings(providers=default_providers())
    other_model.providers["openai"].model = "another-model"
    assert key(real) != key(other_model)
    assert key(real) == key(Settings(providers=default_providers()))
