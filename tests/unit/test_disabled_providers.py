"""``enabled = false`` means never called: a job or a fleet order naming a disabled provider is
refused with a message naming it, and the fleet order skips it."""

from __future__ import annotations

import pytest

from orchestration.config import Settings, default_providers
from orchestration.errors import InvalidRequestError
from orchestration.extraction import parse_request, prepare_extract
from orchestration.generation import parse_generation_request, prepare_generate
from orchestration.models import Candidate
from orchestration.state import FleetSetting

SETTINGS = Settings(providers=default_providers())  # "local" ships disabled


def extract(fleet: FleetSetting | None = None, **kw):
    request = parse_request((), {"text": "Meet Ann on Friday.", **kw})
    return prepare_extract(request, job_id="j", settings=SETTINGS, fleet=fleet or FleetSetting())


def generate(**kw):
    request = parse_generation_request((), {"prompt": "Write a haiku.", **kw})
    return prepare_generate(request, job_id="j", settings=SETTINGS, fleet=FleetSetting())


@pytest.mark.parametrize("strategy", ["failover", "consensus", "best_match"])
def test_a_job_naming_a_disabled_provider_is_refused_with_its_name(strategy):
    with pytest.raises(InvalidRequestError, match="'local' is disabled in the config") as info:
        extract(strategy=strategy, providers=["local", "openai"])
    assert info.value.field == "providers"


def test_explicit_candidates_and_generation_helpers_are_checked_too():
    local = Candidate(provider="local").model_dump(mode="json")
    with pytest.raises(InvalidRequestError, match="'local' is disabled"):
        extract(strategy="consensus", candidates=[local, {"provider": "openai"}])
    with pytest.raises(InvalidRequestError, match="'local' is disabled"):
        generate(providers=["local", "openai"])
    with pytest.raises(InvalidRequestError, match="judge: provider 'local' is disabled"):
        generate(providers=["openai", "gemini"], judge="local")


def test_the_fleet_order_skips_disabled_providers():
    spec = extract(fleet=FleetSetting(strategy="failover", order=["local", "gemini", "openai"]))
    assert [c.provider for c in spec.candidates] == ["gemini", "openai"]
    chord = extract(strategy="consensus", fleet=FleetSetting(order=["local", "gemini", "openai"]))
    assert "local" not in [c.provider for c in chord.candidates]
