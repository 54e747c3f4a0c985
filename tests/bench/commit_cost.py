"""CPU of one group commit into a DuckDB file, by hand: not part of `make bench`.

What row 4's paced figure is mostly made of, without gRPC, generators or a machine's
other load in the way: the bench's own batches (ingest_workload) from `--agents` agents,
decoded as the collector decodes them, committed straight through `DuckDBStore.commit`
in groups of `--group`. The default group, 10, is the paced fleet's typical one: 1,000
agents sending a batch each 10 s are 100 batches a second, and a batch waits up to
100 ms for company (ingest/commit.py). Every agent's first batch (its dictionary) is
committed first, then `--windows` rounds of one steady batch per agent; the first half
of those commits warms the file and the second half is timed, by the process's CPU
clock (DuckDB's threads included). Prints CPU per commit and per batch, one line per
`--repeats` run, each on a fresh file, and their median.

    .venv/bin/python tests/bench/commit_cost.py --group 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench.ingest_workload import Batches  # noqa: E402
from pyrometer.collector.ingest.decode import StreamDecoder  # noqa: E402
from pyrometer.collector.storage.batch import DecodedBatch  # noqa: E402
from pyrometer.collector.storage.duckdb.backend import DuckDBStore  # noqa: E402
from pyrometer.proto import ingest_pb2  # noqa: E402

FIRST_GROUP = 50  # agents whose dictionaries go in one commit before the timed part


def cpu_per_commit(path: Path, agents: int, group: int, windows: int) -> float:
    """Seconds of process CPU per commit of `group` steady batches (see the module doc)."""
    batches = Batches.build(time.time_ns() - 3600 * 10**9)
    decoders = [StreamDecoder() for _ in range(agents)]

    def decoded(agent: int, seq: int) -> DecodedBatch:
        message = ingest_pb2.Batch.FromString(batches.encode(agent, seq))
        return decoders[agent].decode(message, time.time_ns())

    store = DuckDBStore(path)
    try:
        for start in range(0, agents, FIRST_GROUP):
            store.commit([decoded(a, 1) for a in range(start, min(start + FIRST_GROUP, agents))])
        groups = [[decoded(a, seq) for a in range(start, min(start + group, agents))]
                  for seq in range(2, windows + 2) for start in range(0, agents, group)]
        warm, timed = groups[:len(groups) // 2], groups[len(groups) // 2:]
        for g in warm:
            store.commit(g)
        began = time.process_time()
        for g in timed:
            store.commit(g)
        return (time.process_time() - began) / len(timed)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--group", type=int, default=10, help="batches a commit")
    parser.add_argument("--windows", type=int, default=6, help="steady batches per agent")
    parser.add_argument("--repeats", type=int, default=3, help="runs, each on a fresh file")
    args = parser.parse_args(argv)
    if min(args.agents, args.group, args.windows, args.repeats) < 1:
        parser.error("every count must be at least 1")
    runs = []
    for run in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="pyrometer-commit-") as work:
            cpu = cpu_per_commit(Path(work) / "commit.duckdb", args.agents, args.group, args.windows)
        runs.append(cpu)
        print(f"run {run + 1}: {cpu * 1e3:.2f} ms of CPU a commit of {args.group} batches, "
              f"{cpu / args.group * 1e6:.0f} us a batch", flush=True)
    print(f"median: {statistics.median(runs) * 1e3:.2f} ms a commit ({args.agents} agents, "
          f"groups of {args.group})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
