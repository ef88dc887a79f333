"""Cheaper exception records: billiard copies code positions only when they are used.

Celery wraps every exception a task raises in billiard's ``ExceptionInfo``: a failed provider
call in a failover hop, and the ``Ignore`` that a dispatching entry task
raises. On Python 3.11+, billiard's picklable copy of each code object in the traceback lists
all its ``co_positions()`` up front. For Celery's tracer, a long function, that is thousands of
tuples: about 0.7 ms of CPU per exception, which nothing reads unless the record is pickled.
Here the copy keeps a reference to the code object and lists the positions only when asked, or
when it is pickled (prefork pools send the record between processes).

Celery also builds two records for every task that raises ``Ignore`` (every public entry task:
the job's last task publishes its answer), each formatting the whole stack as text (Python
3.11 parses each source line again for its ``^^^`` marks): ~0.1 ms per entry that nothing
reads, since an ignored task is logged in one line without a traceback, stores nothing and is
acknowledged. :class:`QuickExceptionInfo` (the tracer's record class in worker processes) keeps
the stack but writes an ``Ignore``'s text as its one exception line; any other exception is
recorded exactly as billiard does.
"""

from __future__ import annotations

import logging
import sys
import traceback
import types
from typing import Any

import billiard
from billiard import einfo
from celery.app import trace
from celery.exceptions import Ignore

log = logging.getLogger("quorum.einfo")


class LazyCode(einfo._Code):
    """billiard's ``_Code`` with ``co_positions`` read from the code object on demand."""

    def __init__(self, code: types.CodeType) -> None:
        self.co_filename = code.co_filename
        self.co_name = code.co_name
        self.co_argcount = code.co_argcount
        self.co_cellvars = ()
        self.co_firstlineno = code.co_firstlineno
        self.co_flags = code.co_flags
        self.co_freevars = ()
        self.co_code = b""
        self.co_lnotab = b""
        self.co_names = code.co_names
        self.co_nlocals = code.co_nlocals
        self.co_stacksize = code.co_stacksize
        self.co_varnames = ()
        self.co_qualname = code.co_qualname
        self._code: types.CodeType | None = code
        self._co_positions: list[Any] | None = None

    @property
    def co_positions(self) -> Any:
        """Like ``CodeType.co_positions``: a callable giving an iterator of positions."""
        if self._code is not None:
            return self._code.co_positions
        positions = self._co_positions or []
        return lambda: iter(positions)

    def __reduce__(self) -> tuple[Any, ...]:
        state = dict(self.__dict__)
        code = state.pop("_code", None)
        if code is not None:
            state["_co_positions"] = list(code.co_positions())
        state["_code"] = None
        return _rebuild, (state,)


def _rebuild(state: dict[str, Any]) -> LazyCode:
    code = LazyCode.__new__(LazyCode)
    code.__dict__.update(state)
    return code


class QuickExceptionInfo(einfo.ExceptionInfo):
    """billiard's ``ExceptionInfo``; for Celery's ``Ignore`` (a task's "nothing to store", not an
    error) the traceback text is the exception's own line, not the formatted stack."""

    def __init__(self, exc_info: Any = None, internal: bool = False) -> None:
        exc_info = exc_info or sys.exc_info()
        if not isinstance(exc_info[1], Ignore):
            super().__init__(exc_info, internal)
            return
        self.type, exception, tb = exc_info
        try:
            self.tb = einfo.Traceback(tb)
            self.traceback = "".join(traceback.format_exception_only(self.type, exception))
            self.internal = internal
        finally:
            del tb
        self.exception = einfo.ExceptionWithTraceback(exception, self.traceback)


#: The billiard minor versions whose ``einfo._Code`` this replaces (a unit test pins its source).
TESTED_BILLIARD = ((4, 2), (4, 3))


def install() -> bool:
    """Make billiard's traceback copies use :class:`LazyCode`, and Celery's tracer record with
    :class:`QuickExceptionInfo`, in this (worker) process, on the tested billiard versions only
    (idempotent); False, and stock billiard and Celery, on any other."""
    if tuple(int(p) for p in billiard.__version__.split(".")[:2]) not in TESTED_BILLIARD:
        log.warning("billiard %s is untested: cheaper exception records not installed", billiard.__version__)
        return False
    einfo._Frame.Code = LazyCode
    if trace.ExceptionInfo in (einfo.ExceptionInfo, QuickExceptionInfo):  # Celery's tracer records
        trace.ExceptionInfo = QuickExceptionInfo
    return True
