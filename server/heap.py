"""The process's garbage-collector policy for a long-running server.

Once started, the server holds millions of objects for its whole life (the OPC UA address
space above all: node, attribute and reference objects; the tag table; the alarm bank),
and makes short-lived ones at a high rate (the DataValues, Variants and notifications of
each publishing interval). With the collector's defaults every full collection walked the
long-lived ones, a pause of 0.6 to 1.2 s on the event loop with 10 000 OPC UA variables
(bench/test_opcua_throughput.py). So the runtime, once every stage started, freezes what is
alive (never scanned again; reference counting still frees what is dropped) and raises the
thresholds so that the values of one interval die young; at stop it thaws both.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


def freeze_heap() -> None:
    """Collect once, move every object alive into the collector's permanent generation, and
    let young objects die young (the thresholds below); thaw_heap undoes both.

    Called once every stage started. The DataValues, Variants and notifications of the
    OPC UA writes live one publishing interval (about 30 000 objects a pass of 10 000
    values); with the default thresholds (700, 10, 10) they reached
    the old generation and set off a full collection every pass or two (still 90-280 ms
    each, over the monitored items made after the freeze). With (10 000, 50, 10) they die
    before that: the longest collection measured 12 ms instead of 86 ms, 95k instead of
    60k notifications/s in the same conditions.
    """
    global _thresholds
    gc.collect()
    gc.freeze()
    if _thresholds is None:
        _thresholds = gc.get_threshold()
        gc.set_threshold(*_GC_THRESHOLDS)


def thaw_heap() -> None:
    """Undo freeze_heap (the server stopped): its objects are collected again, with the
    collector's thresholds as they were."""
    global _thresholds
    gc.unfreeze()
    if _thresholds is not None:
        gc.set_threshold(*_thresholds)
        _thresholds = None


_GC_THRESHOLDS = (10_000, 50, 10)
_thresholds: tuple[int, int, int] | None = None  # the ones freeze_heap replaced


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic collection inside: for building what lives as long as the server.

    A plant of 100 000 raw tags makes millions of small objects at start (the OPC UA
    layout, its nodes, the history series), none of them garbage; the collector, walking
    the growing heap again and again, took most of the time (13 s for the history series
    alone, on the event loop). They are frozen by freeze_heap once every stage started.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

