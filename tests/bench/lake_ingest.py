"""Lake ingest: one, two and three collector processes writing one DuckLake.

A measurement, not a test. Run from the repository root, in .venv-lake:

    .venv-lake/bin/python tests/bench/lake_ingest.py [--size tiny|full] [--json OUT]

The load is ingest_load.py's, unchanged: load-generator processes (ingest_gen.py)
replaying realistic agent batches over real gRPC, one stream per agent, counted by ack
time over a measured interval after a warm-up. What differs is the store: each level
gets a fresh lake (an empty catalog database in a PostgreSQL started here, Parquet in a
local data path) and 1, 2 or 3 real collector processes on it, agent i sending to
collector i mod n. Maintenance is off in every collector (--maintenance-interval off):
lake_files.py measures it apart. A level with the embedded file on the same DuckDB
(1.5.5, this virtualenv's) comes first, as the baseline the lake is compared with.

CPU is the collectors' together. After the load each collector's /metrics gives its
commits, the commits it ran again after losing a conflict (pyrometer_commit_conflicts)
and those that gave up (pyrometer_commit_failures); stored = acked is read from one
collector, which answers for the whole lake.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import common, ingest_load, lake_setup  # noqa: E402
from bench.ingest_load import Level  # noqa: E402
from bench.lake_report import ingest_markdown as markdown  # noqa: E402
from pyrometer.collector.procs import Child  # noqa: E402
from pyrometer.collector.storage.lake.backend import LakeStore  # noqa: E402
from support.postgres import Postgres  # noqa: E402

TITLE = "Lake ingest, 1-3 collectors"
__all__ = ["TITLE", "measure", "markdown"]


@dataclass(frozen=True, slots=True)
class LakeLevel:
    """One load on `collectors` collectors; `backend` "file" is the embedded baseline."""

    collectors: int
    load: Level
    backend: str = "lake"

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.collectors}-{self.load.name}"


def _levels(closed: Level, paced: Level, counts: tuple[int, ...]) -> list[LakeLevel]:
    return ([LakeLevel(1, closed, "file")] + [LakeLevel(n, closed) for n in counts]
            + [LakeLevel(n, paced) for n in counts])


# sized for a 2-core machine: "full" takes about four minutes there
LEVELS = {
    "tiny": _levels(Level(2, "closed", 0.5, 2.0), Level(4, "paced", 0.5, 2.0, period_s=0.5),
                    (1, 2)),
    "full": _levels(Level(20, "closed", 5, 15), Level(200, "paced", 5, 15), (1, 2, 3)),
}


def _probe(collectors: list[Child], store: LakeStore | None) -> ingest_load.Probe:
    """The collectors' commit counters together and, in the lake, its Parquet files per
    table: what the measured interval adds to them is its commits, conflicts and files."""
    def read() -> dict[str, float]:
        counters = [lake_setup.commit_counters(c.ready.group("http")) for c in collectors]
        out = {key: sum(c[key] for c in counters) for key in lake_setup.COMMIT_METRICS}
        if store is not None:
            out |= {f"files.{table}": float(parquet)
                    for table, (parquet, _) in store.data_files().items()}
        return out
    return read


def run_level(level: LakeLevel, pg: Postgres, work: Path) -> dict[str, Any]:
    """One level on fresh collectors and a fresh store: ingest_load's figures, and the
    collectors' commits, conflicts and Parquet files, over the measured interval and in
    all (per collector)."""
    lake = store = None
    if level.backend == "file":
        collectors = [common.start_collector(work, "--retention", "off", name=level.name)]
    else:
        lake = lake_setup.new_lake(pg, work, level.name)
        collectors = lake_setup.start_collectors(lake, work, level.collectors, level.name)
    try:
        if lake is not None:
            store = LakeStore(lake.catalog, f"{lake.data_path}/")
        driven = ingest_load.drive(level.load, collectors, work, _probe(collectors, store))
        stored = common.stored_samples(collectors[0].ready.group("http"))
        totals = [lake_setup.commit_counters(c.ready.group("http")) for c in collectors]
        peak = max(ingest_load.peak_rss_mib(c.pid) for c in collectors)
    finally:
        if store is not None:
            store.close()
        codes = [c.stop(signal.SIGTERM, timeout=60) for c in collectors]
    records = None  # the lake's levels check the samples only
    if lake is None:
        db = work / f"{level.name}.duckdb"
        size = db.stat().st_size if db.exists() else 0
        records = ingest_load.stored_records(db) if db.exists() else None
    else:
        size = lake.parquet_bytes()
    exit_code = next((code for code in codes if code != 0), 0)
    out = ingest_load.figures(level.load, driven, stored, peak, exit_code, size, records)
    out["errors"] = lake_setup.scrub(out["errors"], work)
    out["failed_streams"] = sum(len(r["errors"]) for r in driven["results"])
    return out | {"collectors": level.collectors, "backend": level.backend,
                  "measured": driven["observed"]["probe"], "per_collector": totals,
                  "exit_codes": codes}


def measure(size: str, work: Path) -> dict[str, Any]:
    """Every level of `size`, each on its own collectors and store."""
    began = time.monotonic()
    with lake_setup.postgres() as pg:
        levels = []
        for level in LEVELS[size]:
            levels.append(run_level(level, pg, work))
            done = levels[-1]
            print(f"  {level.name}: {done['samples_per_s']:,.0f} samples/s, ack p99 "
                  f"{done['ack_ms']['p99']:,.0f} ms, {done['measured']['conflicts']:.0f} conflicts",
                  file=sys.stderr, flush=True)
    return {"size": size, "cpus": psutil.cpu_count(), "levels": levels,
            "elapsed_s": time.monotonic() - began}


if __name__ == "__main__":
    sys.exit(common.main(__doc__, measure, markdown))
