"""A flame graph over the lake, and its Parquet files before and after a maintenance pass.

A measurement, not a test. Run from the repository root, in .venv-lake:

    .venv-lake/bin/python tests/bench/lake_files.py [--size tiny|full] [--json OUT]

The lake is filled the way collectors fill it: two collector processes (maintenance
off) take ingest_load.py's realistic agent batches from load-generator processes
(ingest_gen.py), every agent in one service, each agent sending the same number of
10 s windows as fast as its acks come back, so the lake ends up holding the same span
of every agent's data (ten minutes at the full size) in the small files that group
commits write. Then, with those collectors stopped:

1. the files per table: Parquet data files in the catalog, rows still inlined in it,
   and Parquet files in the data path (`LakeStore.data_files`, a directory listing);
2. a flame graph of the whole span (`/api/v1/flamegraph`, JSON), timed cold (a fresh
   collector process, its first call) and warm (the median of the next calls), as
   queries.py times the embedded file;
3. one maintenance pass (`maintenance.maintain_once`, the collectors' own pass, run
   here in-process with snapshots expired at once: no query is running to need them),
   timed by step;
4. the files per table again, and the flame graph again, cold and warm.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import common, ingest_load, lake_setup, query_calls  # noqa: E402
from bench.ingest_load import Generator, Level  # noqa: E402
from bench.ingest_workload import WINDOW_NS, identity  # noqa: E402
from bench.lake_report import files_markdown as markdown  # noqa: E402
from pyrometer.agent.shared.model import NANOS_PER_SECOND  # noqa: E402
from pyrometer.collector.metrics import CollectorMetrics  # noqa: E402
from pyrometer.collector.procs import Child  # noqa: E402
from pyrometer.collector.storage.lake.backend import METADATA, LakeStore  # noqa: E402
from pyrometer.collector.storage.lake.maintenance import (  # noqa: E402
    STEPS,
    MaintenancePolicy,
    maintain_once,
)

TITLE = "Lake flame graph and files"
__all__ = ["TITLE", "measure", "markdown"]
FLAMEGRAPH_TARGET_S = 0.5  # a 10-minute flame graph, warm (issue 16)
SLOW_COLD_S = 5.0  # past this, three warm calls instead of the plan's count


@dataclass(frozen=True, slots=True)
class Plan:
    agents: int
    windows: int  # per agent, 10 s each
    collectors: int  # that fill the lake
    warm: int  # warm calls per flame graph

    @property
    def span_s(self) -> int:
        return self.windows * WINDOW_NS // NANOS_PER_SECOND


PLANS = {"tiny": Plan(agents=2, windows=6, collectors=2, warm=2),
         "full": Plan(agents=100, windows=60, collectors=2, warm=5)}


def fill(plan: Plan, collectors: list[Child], base_ns: int, work: Path) -> dict[str, Any]:
    """Every agent sends `plan.windows` batches from `base_ns` on, 2 in flight; returns
    what was acked, how long it took, and the collectors' commit counters."""
    load = Level(plan.agents, "closed", 0.0, 0.0)
    addresses = [c.ready.group("grpc") for c in collectors]
    plans = ingest_load.plans(load, addresses, uuid.uuid4().hex[:12], batches=plan.windows,
                              services=1, base_ns=base_ns)
    began = time.monotonic()
    generators = [Generator(p, work / f"fill-gen{i}.log") for i, p in enumerate(plans)]
    try:
        for g in generators:
            g.expect("ready", timeout=300)
        start = time.monotonic() + 0.2
        for g in generators:  # counted from the start; stopped by the batch count alone
            g.go({"start": start, "from": start, "to": start + 86400, "stop": start + 86400})
        results = [g.expect("result", timeout=3600) for g in generators]
    finally:
        for g in generators:
            g.stop()
    counters = [lake_setup.commit_counters(c.ready.group("http")) for c in collectors]
    errors = [e for r in results for e in r["errors"]]
    return {"wall_s": time.monotonic() - began,
            "acked_samples": sum(r["acked_samples_total"] for r in results),
            "acked_batches": sum(r["acked_total"] for r in results),
            "errors": lake_setup.scrub(errors[:10], work),
            "commits": {key: sum(c[key] for c in counters) for key in lake_setup.COMMIT_METRICS}}


# what the catalog names now: data files, delete files (the rows an update or delete
# removed from a data file), and files it will delete at the next cleanup
_CATALOG_FILES = {
    "data_files": "SELECT count(*) FROM {m}.ducklake_data_file WHERE end_snapshot IS NULL",
    "delete_files": "SELECT count(*) FROM {m}.ducklake_delete_file WHERE end_snapshot IS NULL",
    "scheduled_for_deletion": "SELECT count(*) FROM {m}.ducklake_files_scheduled_for_deletion",
}


def files(store: LakeStore, lake: lake_setup.Lake) -> dict[str, Any]:
    """Per table (Parquet files in the catalog, rows inlined); what the catalog names in
    all; and the Parquet files in the data path, which also holds files no snapshot
    names any more (awaiting cleanup) or ever named (a commit's files when it lost a
    conflict, left for orphan deletion)."""
    on_disk = lake.parquet_files_by_table()
    tables = {table: {"parquet": parquet, "inlined_rows": inlined, "on_disk": on_disk.get(table, 0)}
              for table, (parquet, inlined) in sorted(store.data_files().items())}
    named = store._read(lambda cur: {  # noqa: SLF001 - the catalog's own tables, read-only
        key: int((cur.execute(sql.format(m=METADATA)).fetchone() or (0,))[0])
        for key, sql in _CATALOG_FILES.items()})
    return {"tables": tables, "catalog": named, "on_disk": lake.parquet_files(),
            "bytes": lake.parquet_bytes()}


def maintain(store: LakeStore) -> dict[str, Any]:
    """One maintenance pass, with each step's seconds."""
    metrics = CollectorMetrics()
    began = time.perf_counter()
    result = asyncio.run(maintain_once(store, MaintenancePolicy(snapshot_keep_s=0.0), metrics,
                                       "bench"))
    steps = {step: metrics.value("pyrometer_lake_maintenance_step_seconds_sum", {"step": step})
             for step in STEPS if step != "retention"}
    return {"result": result, "wall_s": time.perf_counter() - began, "steps_s": steps}


def flamegraph(plan: Plan, lake: lake_setup.Lake, end_s: int, work: Path) -> dict[str, Any]:
    call = query_calls.flamegraph(identity(0, "", services=1).service, end_s, plan.span_s)
    timing = query_calls.time_call(work, None, call, plan.warm, SLOW_COLD_S, store=lake.flags())
    return asdict(timing)


def measure(size: str, work: Path) -> dict[str, Any]:
    plan = PLANS[size]
    began = time.monotonic()
    # whole windows, a day back: the span is in the past, as a flame graph's window is
    base_ns = (time.time_ns() - 86400 * NANOS_PER_SECOND) // WINDOW_NS * WINDOW_NS
    end_s = (base_ns + plan.windows * WINDOW_NS) // NANOS_PER_SECOND
    with lake_setup.postgres() as pg:
        lake = lake_setup.new_lake(pg, work, "files")
        collectors = lake_setup.start_collectors(lake, work, plan.collectors, "fill")
        try:
            filled = fill(plan, collectors, base_ns, work)
        finally:
            codes = [c.stop(signal.SIGTERM, timeout=60) for c in collectors]
        store = LakeStore(lake.catalog, f"{lake.data_path}/")
        try:
            before = files(store, lake)
            query_before = flamegraph(plan, lake, end_s, work)
            maintained = maintain(store)
            after = files(store, lake)
            query_after = flamegraph(plan, lake, end_s, work)
        finally:
            store.close()
    print(f"  fill {filled['wall_s']:.0f} s; flame graph warm "
          f"{common.median(query_before['warm_s']):.3f} s before, "
          f"{common.median(query_after['warm_s']):.3f} s after maintenance", file=sys.stderr,
          flush=True)
    return {"size": size, "plan": asdict(plan) | {"span_s": plan.span_s}, "fill": filled,
            "collector_exit_codes": codes, "before": before, "after": after,
            "maintenance": maintained,
            "flamegraph": {"before": query_before, "after": query_after},
            "target_s": FLAMEGRAPH_TARGET_S, "elapsed_s": time.monotonic() - began}


if __name__ == "__main__":
    sys.exit(common.main(__doc__, measure, markdown))
