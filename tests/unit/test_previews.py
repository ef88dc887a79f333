"""Result previews built with ``repr`` show what ``saferepr`` showed, bounded the same way, and
only worker processes make Celery's tracer use them."""

from __future__ import annotations

import inspect
import subprocess
import sys

from celery.app import trace
from celery.utils.saferepr import saferepr

from workers.previews import ELLIPSIS, MAX_ITEMS, preview

#: A provider call's outcome as a failover hop returns it (JSON data from pydantic).
OUTCOME = {
    "provider": "openai",
    "label": "gpt-4.1-mini",
    "params": {"temperature": 0.0},
    "fields": {
        "invoice": "INV-42",
        "total": 12.5,
        "paid": False,
        "lines": [{"sku": "A1", "qty": 2}],
        "note": None,
    },
    "latency_ms": 12.3,
}


def test_a_small_json_result_is_shown_as_its_repr() -> None:
    assert preview(OUTCOME, 1024) == repr(OUTCOME)
    assert "'provider': 'openai'" in preview(OUTCOME, 1024)


def test_a_long_result_is_cut_at_the_limit_and_marked() -> None:
    big = {**OUTCOME, "fields": {f"f{i}": "x" * 40 for i in range(60)}}
    shown = preview(big, 1024)
    assert len(shown) == 1024 and shown.endswith(ELLIPSIS)
    assert shown[: -len(ELLIPSIS)] == repr(big)[: 1024 - len(ELLIPSIS)]


def test_a_long_string_is_cut_too() -> None:
    shown = preview("é" * 5000, 100)
    assert len(shown) == 100 and shown.startswith("'éé") and shown.endswith(ELLIPSIS)


def test_anything_else_goes_through_saferepr() -> None:
    class Custom:
        def __repr__(self) -> str:
            return "<custom>"

    many = list(range(MAX_ITEMS + 1))
    for value in (Custom(), many, {"k": b"bytes"}.keys(), bytearray(b"ab")):
        assert preview(value, 64) == saferepr(value, 64)
    assert preview(OUTCOME, None) == saferepr(OUTCOME, None)  # no limit: the careful walk


def test_a_repr_that_raises_falls_back_to_saferepr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    value = {"x": Broken()}
    assert preview(value, 256) == saferepr(value, 256)


def test_celery_tracer_still_previews_results_with_saferepr_of_the_result_and_its_limit() -> None:
    """Fails loudly when Celery changes the call the worker's install replaces."""
    assert "Rstr = saferepr(R, resultrepr_maxsize)" in inspect.getsource(trace.build_tracer)


def test_only_a_worker_process_installs_the_previews() -> None:
    code = (
        "import workers.app, celery.app.trace as t; a = t.saferepr.__name__; "
        "from workers import previews; ok = previews.install(); print(a, ok, t.saferepr.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["saferepr", "True", "preview"]
