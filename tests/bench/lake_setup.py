"""What the lake's benchmark rows share: a PostgreSQL for the catalogs, a fresh lake per
measurement, lake collectors, and what their /metrics say about commits.

The lake rows run only where DuckDB has the lake's extensions (`make bench-lake` runs
them in .venv-lake) and PostgreSQL's server binaries are installed (`make postgres`);
`available()` says why not otherwise. The data path is a local folder: what S3 adds
(a round trip per Parquet file written or read) is not measured here.
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench import common
from pyrometer.collector.procs import Child
from pyrometer.collector.storage.lake.extensions import CATALOG, extension_file
from support.postgres import Postgres, find_bin, start_postgres

# the counters a lake row reads off each collector's /metrics after a load
COMMIT_METRICS = {
    "commits": "pyrometer_commit_seconds_count",
    "conflicts": "pyrometer_commit_conflicts_total",
    "failures": "pyrometer_commit_failures_total",
    "batches": "pyrometer_ingest_batches_total",
    "duplicates": "pyrometer_ingest_duplicate_batches_total",
    "samples": "pyrometer_ingest_samples_total",
}


def available() -> str | None:
    """Why the lake rows cannot run in this virtualenv, or None when they can."""
    missing = [name for name in CATALOG if extension_file(name) is None]
    if missing:
        import duckdb

        return (f"DuckDB {duckdb.__version__} has no {'/'.join(missing)} extension wheel here: "
                "run the lake rows from .venv-lake (`make bench-lake`)")
    return None


def postgres_version() -> str:
    """The version of the PostgreSQL server the rows start, or "unknown"."""
    bin_dir = find_bin()
    if bin_dir is None:
        return "unknown"
    try:
        out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True,
                             text=True, timeout=30).stdout
    except OSError:
        return "unknown"
    found = re.search(r"\d+(\.\d+)+", out)  # postgres (PostgreSQL) 15.18 (Debian ...)
    return found.group(0) if found else "unknown"


@dataclass(frozen=True, slots=True)
class Lake:
    """One fresh lake: its catalog database and its local data path."""

    catalog: str
    data_path: Path

    def flags(self) -> list[str]:
        """What a collector is started with to store in this lake. Maintenance is off:
        a row runs it itself, when it means to measure it."""
        return ["--lake", self.catalog, "--data-path", f"{self.data_path}/",
                "--maintenance-interval", "off"]

    def parquet_files(self) -> int:
        """Parquet files in the data path, whether a snapshot still names them or not."""
        return sum(1 for _ in self.data_path.rglob("*.parquet"))

    def parquet_files_by_table(self) -> dict[str, int]:
        """Parquet files in each table's folder of the data path (main/TABLE/)."""
        return {folder.name: sum(1 for _ in folder.glob("*.parquet"))
                for folder in sorted((self.data_path / "main").glob("*")) if folder.is_dir()}

    def parquet_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.data_path.rglob("*.parquet"))


@contextmanager
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster for this row's catalogs (tests/support/postgres.py)."""
    if (why := available()) is not None:
        raise RuntimeError(why)
    pg = start_postgres()
    try:
        yield pg
    finally:
        pg.stop()


def new_lake(pg: Postgres, work: Path, name: str) -> Lake:
    """A lake of its own for one measurement: an empty catalog and data path."""
    catalog = pg.create_database(f"lake_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}")
    data = work / f"lake-{name}"
    data.mkdir(parents=True, exist_ok=True)
    return Lake(catalog, data)


def start_collectors(lake: Lake, work: Path, count: int, name: str) -> list[Child]:
    """`count` collector processes on `lake`, started one after another (retention off)."""
    children: list[Child] = []
    try:
        for n in range(count):
            children.append(common.start_collector(work, "--retention", "off",
                                                   name=f"{name}-{n}", store=lake.flags()))
    except BaseException:
        for child in children:
            child.stop()
        raise
    return children


def scrub(texts: list[str], work: Path) -> list[str]:
    """Error messages without the run's own folders (they name the data path)."""
    return [text.replace(str(work), "WORKDIR") for text in texts]


def commit_counters(api: str) -> dict[str, float]:
    """COMMIT_METRICS of the collector at `api`, read off its /metrics."""
    with urllib.request.urlopen(f"{api}/metrics", timeout=60) as response:
        text = response.read().decode()
    values = {sample.name: sample.value for family in text_string_to_metric_families(text)
              for sample in family.samples if not sample.labels}
    return {key: float(values.get(metric, 0.0)) for key, metric in COMMIT_METRICS.items()}
