"""GC pauses in the demo server, background noise for the evaluation, not a fault.

Python imports `sitecustomize` at start-up from the first folder on sys.path that has
one; the evaluation puts this folder on the PYTHONPATH of the demo server only, and only
when noise is on, with PYROMETER_RCA_GC_SEED set. Without that variable this does nothing.

A daemon thread holds a heap of HEAP_OBJECTS small containers the collector must walk,
and at seeded intervals runs a full collection. That holds the GIL for as long as the
walk takes (tens of milliseconds), so every request thread of the server stops in the
meantime, as under a real service's generation-2 collections with a large heap.
"""

from __future__ import annotations

import gc
import os
import random
import threading

HEAP_OBJECTS = 500_000
EVERY_S = (3.0, 9.0)
SEED_VAR = "PYROMETER_RCA_GC_SEED"


def _pause_now_and_then(seed: int, stop: threading.Event) -> None:
    rng = random.Random(seed)
    heap = [[i] for i in range(HEAP_OBJECTS)]  # lists are tracked by the cycle collector
    while not stop.wait(rng.uniform(*EVERY_S)):
        gc.collect()
    del heap


def start(seed: int) -> threading.Event:
    """Start the pauses; set the returned event to end them."""
    stop = threading.Event()
    threading.Thread(target=_pause_now_and_then, args=(seed, stop), name="gc-pauses",
                     daemon=True).start()
    return stop


if os.environ.get(SEED_VAR):
    start(int(os.environ[SEED_VAR]))
