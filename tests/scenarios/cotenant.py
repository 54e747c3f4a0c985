"""A co-tenant: one process that burns a varying share of one CPU core, as a neighbour
on a shared host does. Background noise for the evaluation, not a fault.

The share (duty cycle) holds for a few seconds, then moves to a new seeded value, always
within [MIN_DUTY, MAX_DUTY] of one core, so the neighbour is never idle and never a whole
core (the host_pressure fault is several whole cores). Within each short slice it spins
for duty x slice and sleeps for the rest, so the load is spread over the slice rather
than coming in bursts a latency step would see as a fault.

Run as a script (`python cotenant.py --seed N`): stdlib only, it prints one ready line
and then each change of duty with its unix time, and runs until it is terminated.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from collections.abc import Iterator

MIN_DUTY = 0.05
MAX_DUTY = 0.4
HOLD_S = (4.0, 12.0)  # how long one share lasts, drawn uniformly
SLICE_S = 0.05
READY = "co-tenant started"


def schedule(seed: int, min_duty: float = MIN_DUTY, max_duty: float = MAX_DUTY
             ) -> Iterator[tuple[float, float]]:
    """Endless (hold seconds, duty) pairs, the same for the same seed: a bounded walk, so
    the share drifts and sometimes jumps, rather than white noise around a mean."""
    if not 0.0 <= min_duty <= max_duty <= 1.0:
        raise ValueError(f"duty bounds [{min_duty}, {max_duty}] are not inside [0, 1]")
    rng = random.Random(seed)
    duty = rng.uniform(min_duty, max_duty)
    while True:
        yield rng.uniform(*HOLD_S), duty
        step = rng.gauss(0.0, (max_duty - min_duty) / 3)
        duty = min(max_duty, max(min_duty, duty + step))


def burn(duty: float, seconds: float) -> None:
    """Spin for `duty` of each slice and sleep for the rest, for `seconds`."""
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        spin_until = now + duty * SLICE_S
        while time.monotonic() < spin_until:
            pass
        time.sleep(max(0.0, min(end, now + SLICE_S) - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="burn a varying share of one core")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--min-duty", type=float, default=MIN_DUTY)
    parser.add_argument("--max-duty", type=float, default=MAX_DUTY)
    parser.add_argument("--limit-s", type=float, default=3600.0,
                        help="exit after this long even if nobody stops it")
    args = parser.parse_args(argv)
    print(READY, flush=True)
    deadline = time.monotonic() + args.limit_s
    for hold, duty in itertools.takewhile(lambda _: time.monotonic() < deadline,
                                          schedule(args.seed, args.min_duty, args.max_duty)):
        print(f"duty {duty:.3f} for {hold:.1f} s at {time.time():.3f}", flush=True)
        burn(duty, min(hold, max(0.0, deadline - time.monotonic())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
