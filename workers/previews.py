"""Cheaper previews of task results: what Flower shows of a result, built with ``repr`` in C.

Celery's tracer turns every task's return value into a preview of at most 1024 characters with
``celery.utils.saferepr`` (for the ``task-succeeded`` event Flower reads, and the success log
line, which ``workers.app.TracerLines`` strips anyway); Quorum's publisher does the same for a
job's answer. ``saferepr`` walks the value token by token in Python: ~0.1–0.15 ms and ~2,800
``isinstance`` calls for one provider call's outcome, the largest piece of Celery's own Python
work in a job's profile (``bench/profile.py``). A task's result here is JSON data (a pydantic
``model_dump(mode="json")``), for which :func:`preview` gives ``repr`` (computed in C), cut at the
same length; anything else still goes through ``saferepr``.

:func:`install` makes Celery's tracer use :func:`preview` in worker processes only (a
``worker_init`` handler in ``workers.app``), on the Celery versions it was written against.
"""

from __future__ import annotations

import logging
from typing import Any

import celery
from celery.app import trace
from celery.utils.saferepr import saferepr

log = logging.getLogger("quorum.previews")

#: Types whose ``repr`` is plain Python syntax computed in C, with no user code behind it.
PLAIN = frozenset({dict, list, tuple, str, int, float, bool, type(None)})
#: A container with more items than this goes to ``saferepr`` (which stops at ``maxlen``):
#: ``repr`` would build the whole text before it is cut.
MAX_ITEMS = 256
#: What marks a cut preview (``saferepr`` marks its own cuts with ``...`` too).
ELLIPSIS = "..."
#: The Celery minor versions whose tracer calls ``saferepr`` as this replaces it (a test pins it).
TESTED_CELERY = ((5, 5), (5, 6), (5, 7))


def preview(obj: Any, maxlen: int | None = 1024, *args: Any, **kwargs: Any) -> str:
    """A text of at most ``maxlen`` characters showing ``obj``: ``repr(obj)`` (cut, ending in
    ``...``) for a string, a number or a JSON-like container of at most ``MAX_ITEMS`` items;
    ``saferepr`` for anything else (an object of another type, a large container, a ``repr``
    that raises)."""
    kind = type(obj)
    if kind not in PLAIN or maxlen is None or args or kwargs:
        return saferepr(obj, maxlen, *args, **kwargs)
    if kind in (dict, list, tuple) and len(obj) > MAX_ITEMS:
        return saferepr(obj, maxlen)
    try:
        text = repr(obj)
    except Exception:  # e.g. a deeply nested value (RecursionError): the careful walk decides
        return saferepr(obj, maxlen)
    if len(text) <= maxlen:
        return text
    return text[: max(maxlen - len(ELLIPSIS), 0)] + ELLIPSIS


def install() -> bool:
    """Make Celery's tracer build result previews with :func:`preview` in this (worker) process,
    on the tested Celery versions only (idempotent); False, and stock Celery, on any other."""
    version = tuple(int(p) for p in celery.__version__.split(".")[:2])
    if version not in TESTED_CELERY or getattr(trace, "saferepr", None) not in (saferepr, preview):
        log.warning("celery %s is untested: cheaper result previews not installed", celery.__version__)
        return False
    trace.saferepr = preview
    return True
