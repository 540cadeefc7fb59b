"""The garbage collector while a service serves."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Young-generation size before a collection (CPython's default is 700 objects).
GC_YOUNG_THRESHOLD = 10_000


@contextmanager
def settled_heap() -> Iterator[None]:
    """Keep what start-up built (modules, routes, schemas, compiled statements, the VADER lexicon: over 100k
    objects) out of the cyclic garbage collector, and collect the young generation less often.

    A full collection walked that whole heap, a stall of tens of ms (hundreds on a loaded machine) every few
    seconds at 1,000 touchpoints per second, and 13% of a 500-item batch's CPU (py-spy and gc.callbacks); with
    700 objects per young collection one ran every few touchpoints. Reference counting frees nearly all of a
    request's garbage anyway. Garbage is collected before the freeze, so none of it is kept for good. Undone on
    the way out (tests start many apps in one process)."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
