"""Accuracy counters in Redis (fakeredis): layout, weights, round trips, degradation."""

from __future__ import annotations

import fakeredis
import pytest

from orchestration.extraction import accuracy_updates
from orchestration.extraction.consensus import merge
from orchestration.state import RecentWeights, read_weights, record_accuracy
from orchestration.state.accuracy import accuracy_key, read_counts

P = "quorum:"


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_key_layout_uses_a_per_provider_hash_tag(r: fakeredis.FakeRedis) -> None:
    assert accuracy_key(P, "openai") == "quorum:{openai}:accuracy"
    record_accuracy(r, P, [("openai", "name", True), ("openai", "name", False), ("openai", "date", False)])
    assert r.hgetall("quorum:{openai}:accuracy") == {
        b"name:total": b"2",
        b"name:correct": b"1",
        b"date:total": b"1",
    }


def test_weights_are_laplace_smoothed_with_a_prior_for_unknowns(r: fakeredis.FakeRedis) -> None:
    record_accuracy(r, P, [("openai", "name", True)] * 8 + [("openai", "name", False)] * 2)
    w = read_weights(r, P, ["openai", "claude"], ["name", "date"])
    assert w == {
        ("openai", "name"): pytest.approx(9 / 12),
        ("openai", "date"): 0.5,
        ("claude", "name"): 0.5,
        ("claude", "date"): 0.5,
    }
    assert read_counts(r, P, ["openai"], ["name"]) == {("openai", "name"): (8, 10)}


def test_works_with_decoded_responses() -> None:
    r = fakeredis.FakeRedis(decode_responses=True)
    record_accuracy(r, P, [("gemini", "org", True)])
    assert read_weights(r, P, ["gemini"], ["org"]) == {("gemini", "org"): pytest.approx(2 / 3)}


def test_read_and_record_are_one_round_trip_each(
    r: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = fakeredis.FakeRedis.pipeline

    def counting(self, *a, **kw):
        pipe = real(self, *a, **kw)
        orig = pipe.execute

        def execute(*ea, **ekw):
            calls.append(len(pipe.command_stack))
            return orig(*ea, **ekw)

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(fakeredis.FakeRedis, "pipeline", counting)
    record_accuracy(r, P, [("a", "x", True)])  # loads the script (NOSCRIPT, then again)
    calls.clear()
    record_accuracy(r, P, [("a", "x", True), ("b", "x", False), ("c", "y", True)])
    read_weights(r, P, ["a", "b", "c"], ["x", "y"])
    assert calls == [3, 6]  # one script per provider; per provider one HMGET of accuracy, one of health


def test_record_once_ignores_redelivery(r: fakeredis.FakeRedis) -> None:
    ups = [("openai", "name", True)]
    assert record_accuracy(r, P, ups, once="job-1")
    assert not record_accuracy(r, P, ups, once="job-1")
    assert record_accuracy(r, P, ups, once="job-2")
    assert read_counts(r, P, ["openai"], ["name"]) == {("openai", "name"): (2, 2)}
    assert 0 < r.ttl("quorum:{openai}:accuracy:once:job-1") <= 86_400  # in the provider's slot


def test_nothing_to_record(r: fakeredis.FakeRedis) -> None:
    assert not record_accuracy(r, P, [])
    assert read_weights(r, P, [], ["name"]) == {}


def test_redis_down_degrades_to_the_prior(caplog: pytest.LogCaptureFixture) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    down = fakeredis.FakeRedis(server=server)
    assert read_weights(down, P, ["openai"], ["name"]) == {("openai", "name"): 0.5}
    assert not record_accuracy(down, P, [("openai", "name", True)])
    assert "accuracy" in caplog.text


def test_feedback_loop_with_consensus(r: fakeredis.FakeRedis) -> None:
    """Grades from one merge become the weights of the next."""
    from orchestration.models import FieldValue

    rs = [
        ("a", "openai", {"name": FieldValue(value="Acme", confidence=0.9)}),
        ("b", "claude", {"name": FieldValue(value="Acme", confidence=0.9)}),
        ("c", "gemini", {"name": FieldValue(value="Globex", confidence=0.9)}),
    ]
    for _ in range(5):
        record_accuracy(r, P, accuracy_updates(rs, merge(rs, ["name"])))
    w = read_weights(r, P, ["openai", "claude", "gemini"], ["name"])
    assert w[("openai", "name")] == pytest.approx(6 / 7)
    assert w[("gemini", "name")] == pytest.approx(1 / 7)


def test_recent_weights_are_read_once_per_ttl_per_providers_and_fields(r: fakeredis.FakeRedis) -> None:
    recent = RecentWeights(ttl_s=1.0)
    first = recent.read(r, "q:", ["a", "b"], ["name"], now=100.0)
    record_accuracy(r, "q:", [("a", "name", True)] * 5)
    assert recent.read(r, "q:", ["a", "b"], ["name"], now=100.9) == first  # this process's copy
    other = recent.read(r, "q:", ["a"], ["name"], now=100.9)  # other providers: read now
    assert other[("a", "name")] > first[("a", "name")]
    fresh = recent.read(r, "q:", ["a", "b"], ["name"], now=101.0)  # a second old: read again
    assert fresh == read_weights(r, "q:", ["a", "b"], ["name"])
    assert fresh[("a", "name")] == other[("a", "name")]


def test_recent_weights_stay_bounded(r: fakeredis.FakeRedis) -> None:
    recent = RecentWeights(max_entries=2)
    for field in ("x", "y", "z"):
        recent.read(r, "q:", ["a"], [field], now=1.0)
    assert len(recent._entries) == 2
