"""The worker's garbage collector: start-up objects frozen, young collections less often, and
cycles made later still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator

import pytest
from celery import Celery, states
from celery.app.trace import build_tracer
from celery.exceptions import Ignore
from celery.signals import task_postrun

from workers import gc_tuning


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """This test process's collector as it was (thresholds, nothing frozen)."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_tune_freezes_what_exists_and_raises_the_young_threshold(restored_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    frozen = gc_tuning.tune()
    assert frozen > 1000  # the interpreter, pytest and Quorum's modules
    assert gc.get_freeze_count() > 1000
    assert gc.get_threshold() == (gc_tuning.GEN0_THRESHOLD, 10, 10)
    assert len(gc.get_objects(generation=2)) < 100  # a full collection has next to nothing to walk


def test_cycles_made_after_tune_are_still_collected(restored_gc: None) -> None:
    gc_tuning.tune()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None


def test_a_higher_threshold_set_by_an_operator_stays(restored_gc: None) -> None:
    gc.set_threshold(50_000, 20, 30)
    gc_tuning.tune()
    assert gc.get_threshold() == (50_000, 20, 30)


def test_tune_again_freezes_what_was_built_since(restored_gc: None) -> None:
    """Checked object by object: the frozen count alone also drops when a frozen object dies
    (another test's thread may free some between the two calls)."""
    gc_tuning.tune()
    kept = [Node() for _ in range(100)]  # e.g. the SDK clients, built once the worker is ready
    ids = {id(node) for node in kept}
    assert len(ids & _collector_ids()) == len(kept)
    gc_tuning.tune()
    assert not ids & _collector_ids()  # frozen objects are in no generation the collector walks


def _collector_ids() -> set[int]:
    """Ids of the objects in the three generations a collection can walk (not the frozen ones)."""
    return {id(obj) for obj in gc.get_objects()}


def _garbage_after(run: Callable[[], object]) -> list[object]:
    """What a collection finds unreachable (kept, not freed) after ``run``."""
    gc.collect()
    run()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_a_task_ending_with_ignore_leaves_no_cycle_for_the_collector() -> None:
    """Celery's own tracer (the worker's, not eager mode) runs a task that raises ``Ignore``, as
    every job's entry does: without ``drop_traceback`` the exception, the tracer's frame and
    its locals are left in a cycle for the collector."""
    app = Celery("gc-test", set_as_current=False)

    @app.task(name="gc_test.ignored", bind=True)
    def ignored(self: object, payload: str) -> None:
        raise Ignore()

    tracer = build_tracer(ignored.name, ignored, app=app, hostname="gc-test@host")

    def run() -> None:
        out = tracer("job-1", (), {"payload": "x" * 100}, {"id": "job-1", "delivery_info": {}})
        assert out.info is not None and out.info.state == states.IGNORED

    task_postrun.disconnect(gc_tuning.drop_traceback)
    try:
        stock = _garbage_after(run)
    finally:
        task_postrun.connect(gc_tuning.drop_traceback)
    assert any(isinstance(o, Ignore) for o in stock)  # the cycle this guards against
    assert not any(isinstance(o, Ignore) for o in _garbage_after(run))
