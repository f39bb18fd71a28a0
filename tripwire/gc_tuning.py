"""Garbage-collector settings for a long-running engine process.

Two measured changes (bench/evaluate.py, W1 30,000 events, ratios in interleaved runs on one VM):

1. ``gc.freeze()`` once start-up is done: modules, settings, compiled automations and clients live as
   long as the process, and moving them out of the collector's reach stops every full collection
   from rescanning them (+10 % W1 events/s; about 40 % of the API's CPU under load, bench/intake.py).
2. A first-generation threshold of 10,000 allocations instead of 700: the evaluator allocates a few
   dozen short-lived objects per event, almost none of them in cycles, so the default threshold ran a
   collection every ~20 events and promoted batch-lived objects into older generations to be scanned
   again (+12 % W1 events/s on top of 1). Cyclic garbage lives a little longer; memory stays flat.

Reference cycles created after the freeze (e.g. automations reloaded later) are collected as usual.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["GEN0_THRESHOLD", "settled_heap"]

GEN0_THRESHOLD = 10_000


@contextlib.contextmanager
def settled_heap() -> Iterator[None]:
    """While inside: what exists now is frozen, and the first generation collects less often."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
