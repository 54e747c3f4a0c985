"""A co-tenant: one process that burns a varying share of one CPU core, as a neighbour
on a shared host does, plus a periodic batch job. Background noise for the evaluation,
not a fault.

The share (duty cycle) holds for a few seconds, then moves to a new seeded value, always
within [MIN_DUTY, MAX_DUTY] of one core, so the neighbour is never idle and never a whole
core (the host_pressure fault is several whole cores). Every BATCH_EVERY_S seconds or so
a batch job (a cron-like report, say) takes BATCH_DUTY of the core for a few seconds, in
the same process, so the two together never exceed one core. Within each short slice it
spins for duty x slice and sleeps for the rest, so the load is spread over the slice
rather than coming in bursts a latency step would see as a fault.

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
BATCH_EVERY_S = (45.0, 75.0)  # from the end of one batch to the start of the next
BATCH_S = (2.0, 4.0)
BATCH_DUTY = 0.6
READY = "co-tenant started"


def schedule(seed: int, min_duty: float = MIN_DUTY, max_duty: float = MAX_DUTY
             ) -> Iterator[tuple[float, float, str]]:
    """Endless (hold seconds, duty, "walk" or "batch") steps, the same for the same seed:
    a bounded walk, so the share drifts and sometimes jumps rather than being white noise
    around a mean, interrupted by the batch job at seeded intervals."""
    if not 0.0 <= min_duty <= max_duty <= 1.0:
        raise ValueError(f"duty bounds [{min_duty}, {max_duty}] are not inside [0, 1]")
    rng = random.Random(seed)
    duty = rng.uniform(min_duty, max_duty)
    elapsed, next_batch = 0.0, rng.uniform(*BATCH_EVERY_S)
    while True:
        if elapsed >= next_batch:
            hold = rng.uniform(*BATCH_S)
            yield hold, max(duty, BATCH_DUTY), "batch"
            elapsed += hold
            next_batch = elapsed + rng.uniform(*BATCH_EVERY_S)
            continue
        hold = min(rng.uniform(*HOLD_S), next_batch - elapsed)  # the batch starts on time
        yield hold, duty, "walk"
        elapsed += hold
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
    for hold, duty, what in itertools.takewhile(lambda _: time.monotonic() < deadline,
                                                schedule(args.seed, args.min_duty, args.max_duty)):
        print(f"duty {duty:.3f} for {hold:.1f} s at {time.time():.3f} ({what})", flush=True)
        burn(duty, min(hold, max(0.0, deadline - time.monotonic())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
