"""CPython's cyclic garbage collector paused while a large answer is built.

Building a flame graph, a diff or a spike analysis allocates tens of thousands of
tracked objects (tree nodes, their dicts, tuples) that live until the answer is written
and form no reference cycles: reference counting frees them when the build ends. While
they live, though, they push the collector's generation counts past their thresholds,
and each time the survivors are promoted, until a full collection walks the whole heap,
which in a collector holds long-lived caches (stacks, function paths, stack facts). On
the bench's hour that was a 20-30 ms full collection in every other flame graph (a
median of 116-125 ms warm over HTTP that alternated between about 95 and 150).

Paused, no collection runs during the build, and when it ends its objects are freed,
which takes the counts back down: nothing is owed afterwards. Garbage with cycles made
meanwhile (there is none in these builds) waits for the next collection.

The switch is process-wide, so the pause lasts while any build runs: builds on several
threads count themselves in and out, and a collector that was off to begin with (a
caller's choice) stays off.

Also here: the collection thresholds a collector process runs with (INGEST_THRESHOLDS,
below), set for ingest.
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_builds = 0  # builds running now
_resume = False  # whether to turn the collector back on when the last one ends


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection while the block runs (nor while another's does)."""
    global _builds, _resume
    with _lock:
        if _builds == 0:
            _resume = gc.isenabled()
            gc.disable()
        _builds += 1
    try:
        yield
    finally:
        with _lock:
            _builds -= 1
            if _builds == 0 and _resume:
                gc.enable()


def without_gc(func: Callable[P, T]) -> Callable[P, T]:
    """`func`, run with collection `paused`."""

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with paused():
            return func(*args, **kwargs)
    return run


# The collection thresholds of a collector process (service.main). CPython's default,
# (700, 10, 10), runs a young collection every 700 net allocations, and under ingest
# much of what a collection finds alive is a batch waiting for its group commit (up to
# 100 ms): it is promoted, and the older generations fill with it until a full
# collection walks the whole heap, every stream's dictionary with it. At 1,000 agents at
# their own pace (`make bench`, row 4's paced level, 100 ms wait) one run spent 1.31 s
# in collections over about 55 s: 1,150 young ones (0.47 s), 105 middle (0.21 s) and 8
# full ones (0.62 s, the longest 188 ms, with the event loop and every ack waiting). With
# (50_000, 20, 100) the same run made 16 young collections (0.25 s) and no other: a
# batch lives and dies between two of them. Garbage in reference cycles, which reference
# counting does not free, waits at most 50,000 allocations longer.
INGEST_THRESHOLDS = (50_000, 20, 100)


def tune_for_ingest() -> None:
    """Set INGEST_THRESHOLDS for this process."""
    gc.set_threshold(*INGEST_THRESHOLDS)
