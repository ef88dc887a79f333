"""A worker's garbage collector: what start-up built is frozen, and young collections run less often.

CPython's cyclic collector stops every thread while it runs. A warm worker holds some 330,000
objects that live as long as it does (modules, Celery's and the SDKs' classes, pydantic schemas,
the SDK clients), and every full collection walked all of them: under load (one worker, 32 jobs
in flight) a full collection took 100–240 ms, during which no job moved, and all collections
together took about 0.8 ms per job. :func:`tune` collects what start-up left, freezes the rest
(``gc.freeze``: later collections skip it) and raises the youngest generation's threshold from
700 to ``GEN0_THRESHOLD`` allocations: young collections, whose cost goes with what they find
rather than with how often they run, come in fewer, larger batches. The worker runs it when it
starts (before a prefork pool forks: the children inherit the frozen objects) and again once it
is warm (the runtime and the SDK clients). Unreachable cycles are still collected; a frozen
object that later becomes garbage is not, and start-up objects live as long as the process.

Most of the cycles a job left came from one place: the exception a task ends with (every
public entry ends with ``Ignore``: the job's last task publishes its answer). Celery's tracer
keeps it in its frame's locals while the exception's traceback holds that frame, so the frame,
its locals and the request behind them stayed until a collection found them: about 130
objects of garbage per job, three quarters of it this cycle (the rest came from the prompt's
JSON: ``orchestration.prompts.fields_json``). :func:`drop_traceback` (a ``task_postrun``
receiver) lets the exception forget its traceback once the tracer has recorded what it needs
(the log line, the stored failure, the copy ``ExceptionInfo`` makes).
"""

from __future__ import annotations

import gc
from typing import Any

from celery.signals import task_postrun

#: Allocations (net of deallocations) between two collections of the youngest generation.
GEN0_THRESHOLD = 10_000


def tune() -> int:
    """Collect, freeze what is left and raise the youngest generation's threshold; return how
    many objects were frozen. Safe to run again (what is frozen stays frozen)."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GEN0_THRESHOLD, gen0), gen1, gen2)  # an operator's higher one stays
    return gc.get_freeze_count()


@task_postrun.connect
def drop_traceback(retval: Any = None, **_: Any) -> None:
    """After a task ended with an exception (``retval`` is it: ``Ignore``, a failure, a retry),
    drop its traceback: Celery's tracer has logged, stored and copied what it needed, and the
    traceback is what ties the tracer's frame to the exception in a cycle."""
    if isinstance(retval, BaseException):
        retval.__traceback__ = None
