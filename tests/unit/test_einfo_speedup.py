"""billiard's exception records stay complete and picklable with lazily copied code positions."""

from __future__ import annotations

import pickle
import traceback

from billiard.einfo import ExceptionInfo

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
