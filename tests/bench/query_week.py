"""Row 8 of `make bench`: flame graphs and spike analyses over windows of up to 7 days.

A measurement, not a test. Run from the repository root:

    .venv/bin/python tests/bench/query_week.py [--size tiny|full] [--json OUT] [--workdir DIR]

A week of the service rows 5 and 6 query for a day (query_fill.py: a hundred instances,
the same stacks, requests, telemetry, deploy and spike), written straight into the
collector's tables as row 5 writes its day: about 600 million sample rows, a 7.5 GB
file, some 9 minutes of fill on two cores. A real collector on that file then answers
flame graphs of 5 min to 7 days and spike analyses of 1 h to 7 days over the HTTP API,
each timed cold (a fresh collector) and warm (the median of the next calls), as row 5
times them (query_calls.py).

The spike analysis steps 2 min at every length here, where row 5 steps 30 s: the API
cuts a window and its baseline into at most 10,000 steps, and 7 days of 1 min steps
are 10,080.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import common, query_calls  # noqa: E402
from bench.queries import time_calls  # noqa: E402
from bench.query_fill import SECOND, SERVICE, WINDOW_S, Day, fill  # noqa: E402
from bench.query_report import _warm as warm_s  # noqa: E402

TITLE = "A week of data"
COMMAND = ".venv/bin/python tests/bench/query_week.py --size full"
WEEK = 7 * 86_400
# the goals for the longest window, at the full size (goals.py shows them too)
FLAMEGRAPH_TARGET_S, SPIKES_TARGET_S = 1.0, 2.0
SLOW_COLD_S = 3.0  # past this, three warm calls at most, to bound the run

_H, _M = 3600, 60


@dataclass(frozen=True, slots=True)
class WeekPlan:
    """One size: the data, and the windows each endpoint is asked about (seconds)."""

    instances: int
    seconds: int
    request_rate: int
    stacks: int
    flamegraph: tuple[int, ...]
    spikes: tuple[int, ...]
    step: str
    baseline: str
    warm: int


PLANS = {
    "tiny": WeekPlan(instances=2, seconds=2 * _H, request_rate=2, stacks=500,
                     flamegraph=(5 * _M, _H, 2 * _H), spikes=(_H, 2 * _H), step="2m",
                     baseline="30m", warm=2),
    "full": WeekPlan(instances=100, seconds=WEEK, request_rate=2, stacks=4000,
                     flamegraph=(5 * _M, _H, 24 * _H, WEEK), spikes=(_H, 24 * _H, WEEK),
                     step="2m", baseline="30m", warm=3),
}


def week_of(plan: WeekPlan) -> Day:
    """The plan's data, ending at the last whole window before now; the deploy 3 h and
    the spike (2 min) 4 min before the end, as in row 5's day."""
    window = WINDOW_S * SECOND
    return Day(plan.instances, plan.seconds, plan.request_rate, plan.stacks,
               time.time_ns() // window * window, deploy_ago_s=min(3 * _H, plan.seconds // 2),
               deploy_stagger_s=6 if plan.instances > 10 else 5, spike_ago_s=4 * _M,
               spike_s=2 * _M)


def calls(plan: WeekPlan, end_s: int) -> list[query_calls.Call]:
    return ([query_calls.flamegraph(SERVICE, end_s, w) for w in plan.flamegraph]
            + [query_calls.spikes(SERVICE, end_s, w, plan.step, plan.baseline)
               for w in plan.spikes])


def measure(size: str, work: Path) -> dict[str, Any]:
    """Fill a week, then time every call; figures for BENCHMARKS.json."""
    plan = PLANS[size]
    day = week_of(plan)
    db = work / "week.duckdb"
    began = time.perf_counter()
    fill_s = fill(db, day)
    fill_total = time.perf_counter() - began
    timings = time_calls(db, calls(plan, day.end_ns // SECOND), plan.warm, work, SLOW_COLD_S)
    file_bytes = db.stat().st_size
    db.unlink()  # 7.5 GB: not left for the rows after this one
    return {"size": size, "plan": asdict(plan), "day": asdict(day) | {"start_ns": day.start_ns},
            "fill_s": fill_s, "fill_total_s": fill_total, "file_bytes": file_bytes,
            "timings": timings, "total_s": time.perf_counter() - began}


def exponent(result: dict[str, Any], kind: str) -> float:
    """Exponent of warm time against window length, shortest window to longest: 1 is
    linear in the window, 0 flat."""
    windows = sorted(t["window_s"] for t in result["timings"] if t["kind"] == kind)
    if len(windows) < 2:
        return float("nan")
    low, high = warm_s(result, kind, windows[0]), warm_s(result, kind, windows[-1])
    if min(low, high) <= 0:
        return float("nan")
    return math.log(high / low) / math.log(windows[-1] / windows[0])


def _span(seconds: int) -> str:
    for unit, size in ((" days", 86_400), (" h", _H), (" min", _M)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n}{unit}" if not (n == 1 and unit == " days") else "1 day"
    return f"{seconds} s"


def _row(timing: dict[str, Any]) -> str:
    warm = [v * 1000 for v in timing["warm_s"]]
    mid, low, high = common.spread(warm)
    detail = timing["detail"]
    if timing["kind"] == "spikes":
        first = detail.get("first") or {}
        found = (f"{detail['spikes']} spike(s); first: "
                 + (", ".join(first.get("causes", [])) or "no cause") if detail.get("spikes")
                 else "no spike")
    else:
        found = f"{detail['samples']:,} samples"
    return (f"| {_span(timing['window_s'])} | {timing['cold_s'] * 1000:,.0f} | "
            f"{mid:,.0f} ({low:,.0f}–{high:,.0f}) | {found} |")


def markdown(result: dict[str, Any]) -> str:
    plan, day = result["plan"], result["day"]
    longest = max(plan["flamegraph"])
    lines = [f"## 8. {TITLE}", "",
             f"{day['instances']} instances over {_span(day['seconds'])}: the service rows 5 and 6 "
             f"query for a day, for longer ({result['file_bytes'] / 2**20:,.0f} MiB on disk, filled "
             f"in {result['fill_total_s'] / 60:,.1f} min). Milliseconds, cold (a fresh collector's "
             "first call) and warm (median of the next calls, range in brackets), through the "
             f"HTTP API. Spike analyses step {plan['step']} with a {plan['baseline']} baseline "
             "at every length: the API cuts a window into at most 10,000 steps.", "",
             "| flame graph window | cold ms | warm ms | answer |", "|---|---:|---:|---|"]
    lines += [_row(t) for t in result["timings"] if t["kind"] == "flamegraph"]
    lines += ["", "| spike analysis window | cold ms | warm ms | answer |", "|---|---:|---:|---|"]
    lines += [_row(t) for t in result["timings"] if t["kind"] == "spikes"]
    flame, spikes = warm_s(result, "flamegraph", longest), warm_s(
        result, "spikes", max(plan["spikes"]))
    lines += ["", "| target | measured | verdict |", "|---|---:|---|",
              f"| flame graph over {_span(longest)}, warm <= {FLAMEGRAPH_TARGET_S:g} s | "
              f"{flame * 1000:,.0f} ms | "
              f"{common.verdict(flame, FLAMEGRAPH_TARGET_S, at_most=True)} |",
              f"| spike analysis over {_span(max(plan['spikes']))}, warm <= {SPIKES_TARGET_S:g} s | "
              f"{spikes * 1000:,.0f} ms | {common.verdict(spikes, SPIKES_TARGET_S, at_most=True)} |",
              "",
              f"**Growth.** Exponent of warm time against window length, {_span(min(plan['flamegraph']))} "
              f"to {_span(longest)}: flame graph {exponent(result, 'flamegraph'):.2f}; spike analysis, "
              f"{_span(min(plan['spikes']))} to {_span(max(plan['spikes']))}: "
              f"{exponent(result, 'spikes'):.2f} (1 = linear, 0 = flat). A long window reads the "
              "profile rollups (1 min and 1 h buckets) and the latency sketches (10 s), so what a "
              "call reads grows with its buckets, not its raw rows; the spike analysis' own cost "
              "(the spike's requests, profiles and readings) does not grow with the window at all.",
              "", f"Command: `{COMMAND}` ({result['total_s'] / 60:,.0f} min on 2 cores, most of it "
              "the fill)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(common.main(__doc__, measure, markdown))
