"""What the agent's 1 Hz process and host sampler costs a tick, by the target's threads.

A measurement, not a test (pytest does not collect it). Run from the repository root:

    .venv/bin/python tests/bench/sampler_tick.py [--ticks 300] [--pause-ms 30]
        [--threads 1,64] [--against CHECKOUT] [--json OUT]

For each thread count a target process starts with one spinning thread and the rest
idle (blocked on an event, as most of a model server's pool, CUDA and tokenizer threads
are at any moment). One `ProcessSampler` then ticks it `--ticks` times in this
process, each tick after a pause (so its reads meet the colder caches of a 1 Hz tick),
and each tick's CPU is this thread's (time.thread_time_ns). Medians and quartiles are
printed per thread count. Inside a running agent the same tick costs several times more
than here, beside a CPU-bound target and py-spy; compare runs, not the two settings.

`--against CHECKOUT` compares this sampler with another version of it: CHECKOUT is a
checkout of the repository (e.g. `git worktree add /tmp/old <commit>`), whose
agent/host/sampler.py is loaded beside this one (its own imports, such as
agent/host/readings.py, come from this checkout); the two tick the same target in turn,
in a random order each round, so that both meet the same machine. Run it more than once:
on a shared machine the noise between runs is as large as small changes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from pyrometer.agent.host import sampler as this_sampler

TARGET = """
import sys, threading
stop = threading.Event()
for _ in range(int(sys.argv[1]) - 1):
    threading.Thread(target=stop.wait, daemon=True).start()
def spin():
    while True:
        sum(range(1000))
threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


class _Watched:
    def __init__(self, proc: psutil.Process) -> None:
        self.pid, self.create_time = proc.pid, proc.create_time()


def load_sampler(checkout: Path) -> ModuleType:
    """agent/host/sampler.py of another checkout, as a module of its own."""
    path = checkout / "agent" / "host" / "sampler.py"
    spec = importlib.util.spec_from_file_location("sampler_against", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"no sampler at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def ticks(threads: int, count: int, pause_s: float, samplers: dict[str, ModuleType]
          ) -> dict[str, list[int]]:
    """CPU ns of each of `count` ticks of a target with `threads` threads, per sampler."""
    target = subprocess.Popen([sys.executable, "-c", TARGET, str(threads)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None
        if target.stdout.readline().strip() != "ready":
            raise SystemExit("the target did not start")
        watched = _Watched(psutil.Process(target.pid))
        running: dict[str, Any] = {name: module.ProcessSampler() for name, module in samplers.items()}
        took: dict[str, list[int]] = {name: [] for name in samplers}
        for _ in range(count + 5):  # the first few list the tree and take baselines
            for name in random.sample(list(running), len(running)):
                time.sleep(pause_s)
                began = time.thread_time_ns()
                running[name]._tick(lambda: watched)
                took[name].append(time.thread_time_ns() - began)
        return {name: values[5:] for name, values in took.items()}
    finally:
        target.kill()
        target.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--pause-ms", type=float, default=30.0)
    parser.add_argument("--threads", default="1,64", help="comma-separated thread counts")
    parser.add_argument("--against", type=Path, help="a checkout whose sampler to compare")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    samplers = {"this": this_sampler}
    if args.against:
        samplers["against"] = load_sampler(args.against)
    figures: dict[str, dict[int, dict[str, float]]] = {name: {} for name in samplers}
    for threads in (int(n) for n in args.threads.split(",")):
        for name, took in ticks(threads, args.ticks, args.pause_ms / 1000, samplers).items():
            q1, median, q3 = statistics.quantiles(took, n=4)
            figures[name][threads] = {"median_us": median / 1000, "q1_us": q1 / 1000,
                                      "q3_us": q3 / 1000}
            print(f"{name:>8}, {threads:4d} threads: a tick {median / 1000:7.1f} µs "
                  f"(quartiles {q1 / 1000:.1f}-{q3 / 1000:.1f}) over {len(took)} ticks")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
