"""The per-process cache of parsed job specs: a spec is served from memory until its Redis copy
would expire, only as the model it was stored as, and the cache stays bounded."""

from __future__ import annotations

from pydantic import BaseModel

from workers.publication import SpecCache


class Spec(BaseModel):
    job_id: str
    deadline: float


class Other(BaseModel):
    job_id: str


def test_a_cached_spec_is_served_until_it_expires() -> None:
    cache = SpecCache()
    spec = Spec(job_id="j1", deadline=100.0)
    cache.put("j1", spec, expires=400.0, now=10.0)
    assert cache.get(Spec, "j1", now=399.0) is spec
    assert cache.get(Spec, "j1", now=400.0) is None  # the Redis copy is gone by now
    assert cache.get(Spec, "j2", now=10.0) is None


def test_a_spec_is_served_only_as_its_own_model() -> None:
    cache = SpecCache()
    cache.put("j1", Spec(job_id="j1", deadline=1.0), expires=100.0, now=0.0)
    assert cache.get(Other, "j1", now=1.0) is None


def test_the_cache_is_bounded_dropping_expired_then_oldest_entries() -> None:
    cache = SpecCache(max_entries=3)
    for i, expires in enumerate([5.0, 100.0, 100.0]):
        cache.put(f"j{i}", Spec(job_id=f"j{i}", deadline=0.0), expires=expires, now=0.0)
    cache.put("j3", Spec(job_id="j3", deadline=0.0), expires=100.0, now=10.0)  # j0 expired: dropped
    assert [cache.get(Spec, f"j{i}", now=10.0) is not None for i in range(4)] == [False, True, True, True]
    cache.put("j4", Spec(job_id="j4", deadline=0.0), expires=100.0, now=10.0)  # full: the oldest goes
    kept = [cache.get(Spec, f"j{i}", now=10.0) is not None for i in range(5)]
    assert kept == [False, False, True, True, True]
