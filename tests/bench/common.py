"""What every benchmark row shares: the row interface, a standalone command line, the
collector child, and the small statistics the tables are made of.

The machine this runs on is shared and noisy, so the rows report medians of repeated
runs and ratios measured side by side in one session, never an absolute time alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import psutil

from bench.ingest_workload import REQUEST_RATE
from pyrometer.collector.procs import Child, python_env, start

SIZES = ("tiny", "full")
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
MIB = 1024 * 1024
# what the collector prints once both listeners are up
COLLECTOR_READY = r"ingest on (?P<grpc>\S+) .*API on (?P<http>http://\S+)"


class Row(Protocol):
    """One row module of BENCHMARKS.md."""

    TITLE: str

    def measure(self, size: str, work: Path) -> dict[str, Any]: ...

    def markdown(self, result: dict[str, Any]) -> str: ...


def start_collector(work: Path, *extra: str, name: str = "collector",
                    db: Path | None = None, store: Sequence[str] | None = None) -> Child:
    """A real collector on free loopback ports; ``ready.group("grpc"|"http")`` are its
    addresses. It stores in `db` (by default a file named after it in `work`), or where
    the flags `store` say (``--lake URL --data-path PATH``). The caller stops it."""
    where = list(store) if store is not None else ["--db", str(db or work / f"{name}.duckdb")]
    return start(name, CLI + ["collector", *where,
                              "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                              *extra], COLLECTOR_READY, work, env=python_env())


def default_commit_wait(level: dict[str, Any]) -> bool:
    """Whether an ingest level (ingest_load.py's figures) ran with the collector's own
    commit wait: the levels the goals judge; the others vary it to show the trade."""
    return level["level"].get("commit_delay_ms") is None


def decode_workers(level: dict[str, Any]) -> int:
    """The collector's --decode-workers at an ingest level (absent before there were any)."""
    return int(level["level"].get("decode_workers", 0))


def judged_level(level: dict[str, Any], *, workers: bool = False) -> bool:
    """Whether the goals judge an ingest level: the collector's own commit wait and the
    standard batches (the busy-server levels measure what requests cost, apart), no
    agent draining its spool beside the fleet (that level measures the drain), and the
    collector's default of no decode workers unless `workers` (a collector sized for
    throughput runs them: the saturating goal counts those levels, the paced ones do not)."""
    rate = level["level"].get("request_rate", REQUEST_RATE)  # absent before they were varied
    return (default_commit_wait(level) and rate == REQUEST_RATE
            and not level["level"].get("drainer", False)
            and (workers or decode_workers(level) == 0))


def thread_role(python_name: str, roles: dict[str, str]) -> str:
    """What a Python thread does, from `roles` by its name or by its name less a trailing
    number (asyncio_0, asyncio_1, ... share "asyncio_"); else the name, marked Python."""
    prefix = python_name.rstrip("0123456789")
    return roles.get(prefix, roles.get(python_name, f"{python_name} (Python)"))


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user and system) that process ``pid`` has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of process ``pid`` and its live child processes (a collector's decode
    workers). A child that exits in between takes its seconds with it: the workers live
    as long as their collector."""
    parent = psutil.Process(pid)
    total = process_cpu_s(pid)
    for child in parent.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def stored_samples(api: str, service: str | None = None) -> int:
    """Samples the collector at ``api`` has stored, for one service or all of them. Read
    after an agent or generator has had every batch acked: an ack means committed."""
    with urllib.request.urlopen(f"{api}/api/v1/services", timeout=60) as response:
        services = json.loads(response.read())["services"]
    return sum(int(s["samples"]) for s in services if service is None or s["name"] == service)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, minimum and maximum: what a table cell shows of repeated runs."""
    if not values:
        return (float("nan"),) * 3
    return statistics.median(values), min(values), max(values)


def cell(values: Sequence[float], fmt: str = ".3f") -> str:
    """A Markdown cell: the median, and the range when there is more than one run."""
    mid, low, high = spread(values)
    if len(values) < 2:
        return format(mid, fmt)
    return f"{mid:{fmt}} ({low:{fmt}}–{high:{fmt}})"


def verdict(value: float, target: float, *, at_most: bool) -> str:
    """'met' or 'missed' for a target, for the table of targets."""
    if value != value:  # NaN: nothing was measured
        return "not measured"
    ok = value <= target if at_most else value >= target
    return "met" if ok else "missed"


def main(module_doc: str | None, measure: Callable[[str, Path], dict[str, Any]],
         markdown: Callable[[dict[str, Any]], str], argv: list[str] | None = None,
         sizes: Sequence[str] = SIZES) -> int:
    """The standalone command line every row module shares (`sizes`: a row's own sizes
    beside make bench's, for a measurement of its own)."""
    parser = argparse.ArgumentParser(description=(module_doc or "").strip().splitlines()[0])
    parser.add_argument("--size", choices=sizes, default="full")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--workdir", type=Path, help="keep logs and databases here "
                        "(default: a temporary folder, removed afterwards)")
    args = parser.parse_args(argv)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = measure(args.size, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="pyrometer-bench-") as name:
            result = measure(args.size, Path(name))
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0
