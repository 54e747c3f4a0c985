"""The programs the slowdown bench profiles, run by path:

    python tests/bench/bench_targets.py cpu|deep|threads [--pyroscope URL --app NAME]
    python tests/bench/bench_targets.py server [--pyroscope URL --app NAME] -- SERVER.py ARGS...

``cpu`` does small units of pure-Python work in one thread, ``deep`` the same work 50
frames down, ``threads`` the same work in 8 threads at once (bound by the GIL, so their
total is what one core gives). Each prints ``target ready`` once it works, then every
half second ``tick MONOTONIC UNITS CPU``: how many units it has done so far, read with
its own clock, and the CPU seconds the process has used. ``time.monotonic`` is
CLOCK_MONOTONIC, one clock for every process on the host, so the harness can cut an
interval of its choosing out of these lines without any handshake with the target and
without its own scheduling skewing the rate.

``server`` runs the demo model server script with ``runpy``, exactly as ``python
SERVER.py ARGS`` would, so that every arm of the server row runs the same way and only
the Pyroscope arm adds the SDK in front.

``--pyroscope URL`` configures Pyroscope's Python SDK in this process before any work,
as a user would add it: ``sample_rate=100`` and otherwise its defaults. SIGTERM ends the
work and shuts the SDK down, which uploads the samples it still holds.
"""

from __future__ import annotations

import argparse
import runpy
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

TICK_S = 0.5
DEPTH = 50
THREADS = 8
RATE_HZ = 100


def square_sum(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def digit_count(n: int) -> int:
    return sum(len(str(i)) for i in range(n))


def unit() -> None:
    """One unit of work, a few tens of microseconds: fine-grained enough that a tick
    lands within a unit of its due time, and two functions so there are a few stacks."""
    square_sum(400)
    digit_count(100)


def tick(now: float, done: int) -> None:
    # the process's CPU time too: work per CPU-second does not depend on other load
    print(f"tick {now:.6f} {done} {time.process_time():.6f}", flush=True)


def work_and_tick(stop: threading.Event) -> None:
    """Work in this thread until ``stop``, reporting progress every TICK_S."""
    done, due = 0, time.monotonic()
    while not stop.is_set():
        unit()
        done += 1
        now = time.monotonic()
        if now >= due:
            tick(now, done)
            due += TICK_S


def descend(depth: int, stop: threading.Event) -> None:
    """Recurse ``depth`` frames, then work there: every sample carries the whole stack."""
    if depth == 0:
        work_and_tick(stop)
    else:
        descend(depth - 1, stop)


def work_in_threads(stop: threading.Event) -> None:
    """THREADS workers contend for the GIL; the main thread only adds their counts up."""
    counts = [0] * THREADS

    def worker(index: int) -> None:
        while not stop.is_set():
            unit()
            counts[index] += 1

    workers = [threading.Thread(target=worker, args=(i,), name=f"worker-{i}") for i in range(THREADS)]
    for thread in workers:
        thread.start()
    due = time.monotonic()
    while not stop.is_set():
        time.sleep(max(0.0, due - time.monotonic()))
        tick(time.monotonic(), sum(counts))
        due += TICK_S
    for thread in workers:
        thread.join()


KINDS: dict[str, Callable[[threading.Event], None]] = {
    "cpu": work_and_tick, "deep": lambda stop: descend(DEPTH, stop), "threads": work_in_threads}


def start_pyroscope(url: str, app: str) -> Callable[[], object]:
    """Pyroscope's SDK as its README sets it up; returns its shutdown (which flushes)."""
    import pyroscope

    pyroscope.configure(application_name=app, server_address=url, sample_rate=RATE_HZ)
    return pyroscope.shutdown


def run_server(argv: list[str]) -> None:
    """Run the server script as ``python SERVER.py ARGS`` would, in this process."""
    script = Path(argv[0]).resolve()
    sys.path.insert(0, str(script.parent))  # what `python SERVER.py` puts first
    sys.argv = [str(script), *argv[1:]]
    runpy.run_path(str(script), run_name="__main__")


def main() -> int:
    parser = argparse.ArgumentParser(description="A target program for the slowdown bench.")
    parser.add_argument("kind", choices=[*KINDS, "server"])
    parser.add_argument("--pyroscope", metavar="URL", help="profile with Pyroscope's SDK, uploading here")
    parser.add_argument("--app", default="bench", help="Pyroscope application name")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # the server's own flags follow "--"
    args, server = parser.parse_args(argv[:cut]), argv[cut + 1:]
    shutdown = start_pyroscope(args.pyroscope, args.app) if args.pyroscope else None
    try:
        if args.kind == "server":
            if not server:
                parser.error("kind server needs -- SERVER.py ARGS")
            run_server(server)
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print("target ready", flush=True)
        KINDS[args.kind](stop)
        return 0
    finally:
        if shutdown is not None:
            shutdown()


if __name__ == "__main__":
    sys.exit(main())
