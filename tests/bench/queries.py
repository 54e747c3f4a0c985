"""Rows 5 and 6 of `make bench`: query latency over a day of a 100-instance service, and
the bytes that day takes on disk.

A measurement, not a test. Run from the repository root:

    .venv/bin/python tests/bench/queries.py [--size tiny|full] [--json OUT] [--workdir DIR]

A day of data (query_fill.py) is written straight into the collector's tables, then a
real collector on that file answers flame graphs, diffs and spike analyses over the
HTTP API for windows of growing length, each timed cold (a fresh collector) and warm
(the median of the next calls). With the collector stopped, query_probe.py reads how
much data each window holds, where the time goes (DuckDB's profiler, the collector's
code in-process) and what each table takes on disk; py-spy watches the collector
during the calls whose target is missed.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

import duckdb  # noqa: E402

from bench import common, query_calls, query_notes, query_probe, query_report  # noqa: E402
from bench.query_fill import SECOND, SERVICE, WINDOW_S, Day, fill  # noqa: E402
from pyrometer.collector.analysis.detect import DetectConfig  # noqa: E402
from pyrometer.collector.procs import ChildError  # noqa: E402
from pyrometer.collector.timeparse import parse_duration  # noqa: E402

TITLE = "Queries and storage"
# the targets, at the full size
FLAMEGRAPH_WINDOW_S, FLAMEGRAPH_TARGET_S = 3600, 0.15  # goals.py: the tighter goals
SPIKES_WINDOW_S, SPIKES_TARGET_S = 86400, 0.5
BYTES_PER_SAMPLE_TARGET = 1.0
SLOW_COLD_S = 1.0  # past this, three warm calls instead of the plan's count
PARQUET_SLICE_S = 2 * 3600  # the Parquet comparison copies the last two hours


@dataclass(frozen=True, slots=True)
class Plan:
    """One size: the data, and the windows each endpoint is asked about (seconds)."""

    instances: int
    seconds: int
    request_rate: int
    stacks: int
    flamegraph: tuple[int, ...]
    diff: tuple[int, ...]  # each window against the one of the same length before it
    spikes: tuple[int, ...]
    folded: int  # the one window also fetched as folded text
    step: str  # of the spike analysis
    baseline: str
    warm: int
    pyspy_repeats: int
    deploy_ago_s: int
    deploy_stagger_s: int
    spike_ago_s: int
    spike_s: int


_DAY, _H, _M = 86400, 3600, 60
PLANS = {
    "tiny": Plan(instances=2, seconds=10 * _M, request_rate=2, stacks=500, flamegraph=(_M, 5 * _M),
                 diff=(5 * _M,), spikes=(5 * _M,), folded=5 * _M, step="10s", baseline="5m", warm=2,
                 pyspy_repeats=1, deploy_ago_s=400, deploy_stagger_s=5, spike_ago_s=180,
                 spike_s=60),
    # 24 h of 10 s steps and a 30 min baseline is 8820 buckets, over the API's 5000:
    # the spike analysis uses 30 s steps at every length, so that the curve compares
    "full": Plan(instances=100, seconds=_DAY, request_rate=2, stacks=4000,
                 flamegraph=(5 * _M, 15 * _M, _H, 6 * _H, _DAY), diff=(5 * _M, 15 * _M, _H, 6 * _H, 12 * _H),
                 spikes=(5 * _M, 15 * _M, _H, 6 * _H, _DAY), folded=_H, step="30s", baseline="30m",
                 warm=5, pyspy_repeats=3, deploy_ago_s=3 * _H, deploy_stagger_s=6, spike_ago_s=4 * _M,
                 spike_s=2 * _M),
}


def day_of(plan: Plan) -> Day:
    """The plan's data, ending at the last whole window before now."""
    window = WINDOW_S * SECOND
    return Day(plan.instances, plan.seconds, plan.request_rate, plan.stacks,
               time.time_ns() // window * window, plan.deploy_ago_s, plan.deploy_stagger_s,
               plan.spike_ago_s, plan.spike_s)


def calls(plan: Plan, end_s: int) -> list[query_calls.Call]:
    out = [query_calls.flamegraph(SERVICE, end_s, w) for w in plan.flamegraph]
    out.append(query_calls.flamegraph(SERVICE, end_s, plan.folded, "folded"))
    out += [query_calls.diff(SERVICE, end_s, w) for w in plan.diff]
    out += [query_calls.spikes(SERVICE, end_s, w, plan.step, plan.baseline) for w in plan.spikes]
    return out


def data_in_windows(db: Path, plan: Plan, end_ns: int) -> dict[str, Any]:
    """Rows and samples per flame graph window (both sides of a diff), and the requests a
    spike analysis reads (its window and the baseline before it)."""
    baseline_ns = parse_duration(plan.baseline)
    with duckdb.connect(str(db), read_only=True) as con:
        lengths = sorted(set(plan.flamegraph) | set(plan.diff) | {2 * w for w in plan.diff})
        windows = {str(w): query_probe.window_data(con, SERVICE, end_ns - w * SECOND, end_ns)
                   for w in lengths}
        requests = {str(w): query_probe.requests_in(con, SERVICE, end_ns - w * SECOND - baseline_ns,
                                                    end_ns) for w in plan.spikes}
    return {"samples": windows, "requests": requests}


def where_time_goes(db: Path, plan: Plan, end_ns: int, work: Path) -> dict[str, Any]:
    """DuckDB's profile of the flame graph's aggregate for the target window and the
    longest, the in-process phases of each flame graph window, and analyze()'s reads."""
    out: dict[str, Any] = {"flamegraph_sql": {}, "flamegraph_phases": {}}
    with duckdb.connect(str(db), read_only=True) as con:
        for w in sorted({min(FLAMEGRAPH_WINDOW_S, max(plan.flamegraph)), max(plan.flamegraph)}):
            sql, params = query_probe.profile_sql(con, SERVICE, end_ns - w * SECOND, end_ns)
            out["flamegraph_sql"][str(w)] = query_probe.sql_profile(con, sql, params,
                                                                    work / "profile.json")
        for w in sorted({min(plan.flamegraph), min(FLAMEGRAPH_WINDOW_S, max(plan.flamegraph)),
                         max(plan.flamegraph)}):
            out["flamegraph_phases"][str(w)] = query_probe.flamegraph_phases(
                con, SERVICE, end_ns - w * SECOND, end_ns)
    config = DetectConfig(step_ns=parse_duration(plan.step), baseline_ns=parse_duration(plan.baseline))
    longest = max(plan.spikes)
    out["spike_phases"] = {str(longest): query_probe.spike_phases(
        db, SERVICE, end_ns - longest * SECOND, end_ns, config)}
    return out


def time_calls(db: Path, wanted: list[query_calls.Call], warm: int, work: Path,
               slow_s: float = SLOW_COLD_S) -> list[dict[str, Any]]:
    """Each call timed cold and `warm` times warm on a collector of its own (query_calls),
    with a progress line each; row 8 (query_week.py) times its calls the same way."""
    timings = []
    for call in wanted:
        timing = query_calls.time_call(work, db, call, warm, slow_s)
        timings.append(asdict(timing))
        print(f"  {call.kind} {call.window_s} s: cold {timing.cold_s:.3f} s, warm "
              f"{common.cell(timing.warm_s)} s", file=sys.stderr, flush=True)
    return timings


def _warm(timings: list[dict[str, Any]], kind: str, window_s: int) -> float:
    found = [t for t in timings if t["kind"] == kind and t["window_s"] == window_s]
    return common.median(found[0]["warm_s"]) if found else float("nan")


def pyspy_missed(db: Path, plan: Plan, end_s: int, timings: list[dict[str, Any]],
                 work: Path) -> dict[str, Any]:
    """py-spy of the collector during the calls whose target is missed (at the tiny size,
    during the longest spike analysis, so that this path keeps working)."""
    wanted = []
    if _warm(timings, "flamegraph", FLAMEGRAPH_WINDOW_S) >= FLAMEGRAPH_TARGET_S:
        wanted.append(query_calls.flamegraph(SERVICE, end_s, FLAMEGRAPH_WINDOW_S))
    spikes = _warm(timings, "spikes", SPIKES_WINDOW_S)
    if spikes >= SPIKES_TARGET_S or spikes != spikes:  # NaN: a size without that window
        wanted.append(query_calls.spikes(SERVICE, end_s, max(plan.spikes), plan.step, plan.baseline))
    out: dict[str, Any] = {}
    for call in wanted:
        # a spike analysis is long enough for thousands of samples in one call
        repeats = 1 if call.kind == "spikes" else plan.pyspy_repeats
        try:
            out[f"{call.kind} {call.window_s}"] = query_calls.pyspy_collector(work, db, call, repeats)
        except (ChildError, OSError) as err:  # py-spy may lack ptrace rights here
            out[f"{call.kind} {call.window_s}"] = {"error": str(err)[:300]}
    return out


def measure(size: str, work: Path) -> dict[str, Any]:
    """Fill, probe, time the calls, and measure the file; figures for BENCHMARKS.json."""
    plan = PLANS[size]
    day = day_of(plan)
    db = work / "queries.duckdb"
    began = time.perf_counter()
    fill_s = fill(db, day)
    fill_total = time.perf_counter() - began
    with duckdb.connect(str(db), read_only=True) as con:
        stored = query_probe.storage(con, db)
        slice_s = min(plan.seconds, PARQUET_SLICE_S)
        parquet = query_probe.samples_as_parquet(con, work, day.end_ns - slice_s * SECOND)
        parquet["slice_s"] = slice_s
    windows = data_in_windows(db, plan, day.end_ns)
    phases = where_time_goes(db, plan, day.end_ns, work)
    end_s = day.end_ns // SECOND
    timings = time_calls(db, calls(plan, end_s), plan.warm, work)
    spied = pyspy_missed(db, plan, end_s, timings, work)
    return {
        "size": size, "plan": asdict(plan), "day": asdict(day) | {"start_ns": day.start_ns},
        "fill_s": fill_s, "fill_total_s": fill_total, "storage": stored, "parquet": parquet,
        "windows": windows,
        "timings": timings, "phases": phases, "pyspy": spied,
        "targets": {"flamegraph_window_s": FLAMEGRAPH_WINDOW_S, "flamegraph_s": FLAMEGRAPH_TARGET_S,
                    "spikes_window_s": SPIKES_WINDOW_S, "spikes_s": SPIKES_TARGET_S,
                    "bytes_per_sample": BYTES_PER_SAMPLE_TARGET},
        "total_s": time.perf_counter() - began,
    }


def markdown(result: dict[str, Any]) -> str:
    """Sections 5 and 6 of BENCHMARKS.md: the tables, then what bounds each figure."""
    return "\n\n".join([query_report.queries_section(result), query_notes.queries_notes(result),
                        query_report.storage_section(result), query_notes.storage_notes(result)]) + "\n"



if __name__ == "__main__":
    sys.exit(common.main(__doc__, measure, markdown))
