"""billiard's exception records stay complete and picklable with lazily copied code positions."""

from __future__ import annotations

import hashlib
import inspect
import pickle
import subprocess
import sys
import traceback

from billiard import einfo
from billiard.einfo import ExceptionInfo
from celery.app import trace
from celery.exceptions import Ignore

from workers import einfo_speedup


def _raise() -> None:
    raise ValueError("boom")


def _einfo() -> ExceptionInfo:
    einfo_speedup.install()
    try:
        _raise()
    except ValueError:
        return ExceptionInfo()
    raise AssertionError("unreachable")


def _innermost(tb):
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def test_the_copied_code_reads_positions_from_the_code_object_on_demand() -> None:
    info = _einfo()
    code = _innermost(info.tb).tb_frame.f_code
    assert isinstance(code, einfo_speedup.LazyCode)
    assert code.co_name == "_raise"
    assert list(code.co_positions()) == list(_raise.__code__.co_positions())
    assert "ValueError: boom" in info.traceback


def test_a_pickled_record_keeps_its_positions_and_formats() -> None:
    info = _einfo()
    again = pickle.loads(pickle.dumps(info.tb))
    code = _innermost(again).tb_frame.f_code
    assert code._code is None  # the code object itself never travels
    assert list(code.co_positions()) == list(_raise.__code__.co_positions())
    text = "".join(traceback.format_tb(again))
    assert "_raise" in text and "test_einfo_speedup.py" in text


#: sha256 of the upstream code LazyCode replaces and the frame copy that uses it (billiard 4.3.2).
UPSTREAM = {
    "_Code": "a22aed432de129daaef01036797e5bebc5a8cfa04f5f74b2cac57b284de27471",
    "_Frame": "e57881dfae7dbcf2b0ef67de9da7c4fbfe995e7bb72a1eba9c3d408b57f6aaea",
}


def test_the_patched_upstream_code_is_the_code_it_was_written_against() -> None:
    """Fails loudly when billiard changes what the speed-up replaces: re-check LazyCode, then
    update these digests and ``TESTED_BILLIARD``."""
    for name, digest in UPSTREAM.items():
        source = inspect.getsource(getattr(einfo, name))
        assert hashlib.sha256(source.encode()).hexdigest() == digest, f"billiard.einfo.{name} changed"


def test_importing_the_app_leaves_billiard_stock() -> None:
    """Only a worker process installs it (worker_init): a producer importing the app does not."""
    code = "import workers.app, billiard.einfo as e; print(e._Frame.Code.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "_Code"


def _ignored() -> None:
    raise Ignore()


def test_an_ignore_is_recorded_without_its_formatted_stack() -> None:
    """Celery's tracer records every ``Ignore`` twice and reads neither text: the record keeps
    its stack and exception, and its text is the exception's line."""
    try:
        _ignored()
    except Ignore:
        info = einfo_speedup.QuickExceptionInfo(internal=True)
    assert info.type is Ignore and info.internal
    assert info.traceback == "celery.exceptions.Ignore\n"
    assert isinstance(info.exception.exc, Ignore)
    assert _innermost(info.tb).tb_frame.f_code.co_name == "_ignored"


def test_any_other_exception_keeps_billiard_s_full_record() -> None:
    try:
        _raise()
    except ValueError:
        quick, stock = einfo_speedup.QuickExceptionInfo(), ExceptionInfo()
    assert quick.traceback == stock.traceback
    assert "Traceback (most recent call last)" in quick.traceback and "_raise" in quick.traceback


def test_a_worker_process_records_the_tracer_s_exceptions_with_the_quick_class() -> None:
    code = (
        "import workers.app, celery.app.trace as t; a = t.ExceptionInfo.__name__; "
        "from workers import einfo_speedup as s; s.install(); print(a, t.ExceptionInfo.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ExceptionInfo", "QuickExceptionInfo"]


def test_celery_s_tracer_records_an_ignore_through_its_module_s_exception_info() -> None:
    """Fails loudly when Celery stops building the ``Ignore`` record the install replaces."""
    source = inspect.getsource(trace.build_tracer)
    assert "I, R = Info(IGNORED, exc), ExceptionInfo(internal=True)" in source
    assert "ExceptionInfo()" in inspect.getsource(trace.TraceInfo.handle_ignore)
