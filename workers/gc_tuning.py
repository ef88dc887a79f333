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
"""

from __future__ import annotations

import gc

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
