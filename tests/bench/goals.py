"""The performance goals at the top of BENCHMARKS.md: each figure as this run measured it,
beside the goal and a verdict, and beside what `make bench` measured before the work on
them (commit 4db8ad5, 2026-11-28, on the same kind of 2-core machine).

Read from the rows' own figures (the JSON each row module returns), so the summary can
never disagree with the sections below it. A figure the run did not measure (a row that
failed, or a window the size does not have) says so instead of a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import common

DAY, HOUR, WEEK = 86_400, 3_600, 7 * 86_400
HOUR_OF_SAMPLES = 100 * HOUR  # at 100 Hz: the start-up's share, amortised over an hour
BEFORE_COMMIT = "4db8ad5"

Results = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Goal:
    """One figure: where it comes from, its goal, and how it was before."""

    figure: str
    section: str  # where the figure's row is in BENCHMARKS.md
    before: str
    goal: str
    measure: Callable[[Results], float | None]  # None: not measured in this run
    met: Callable[[float], bool]
    show: Callable[[float], str]


def _figures(results: Results, name: str) -> dict[str, Any] | None:
    row = results.get(name)
    return row["figures"] if row and row.get("ok") else None


def _warm_ms(kind: str, window_s: int, row: str = "queries"
             ) -> Callable[[Results], float | None]:
    def measure(results: Results) -> float | None:
        figures = _figures(results, row)
        if figures is None:
            return None
        found = [t for t in figures["timings"] if t["kind"] == kind and t["window_s"] == window_s]
        return 1000 * common.median(found[0]["warm_s"]) if found else None
    return measure


def _bytes_per_sample(results: Results) -> float | None:
    figures = _figures(results, "queries")
    if figures is None or not figures["storage"].get("samples"):
        return None
    return float(figures["storage"]["file_bytes"] / figures["storage"]["samples"])


def _ingest(mode: str) -> Callable[[Results], dict[str, Any] | None]:
    def levels(results: Results) -> dict[str, Any] | None:
        figures = _figures(results, "ingest_load")
        if figures is None:
            return None
        # the levels run with the collector's default commit wait and the standard
        # batches (others vary them); saturating, with decode workers too
        found = [level for level in figures["levels"] if level["level"]["mode"] == mode
                 and common.judged_level(level, workers=mode == "closed")]
        if not found:
            return None
        # saturating: the best level; paced: the largest fleet
        key = "samples_per_s" if mode == "closed" else None
        return max(found, key=lambda lv: lv[key] if key else lv["level"]["streams"])
    return levels


def _saturated(results: Results) -> float | None:
    level = _ingest("closed")(results)
    return None if level is None else float(level["samples_per_s"])


def _paced_cpu(results: Results) -> float | None:
    level = _ingest("paced")(results)
    return None if level is None else float(level["collector_cpu_s_per_million"])


def _paced_p99(results: Results) -> float | None:
    level = _ingest("paced")(results)
    return None if level is None else float(level["ack_ms"]["p99"])


def _agent_amortised(results: Results) -> float | None:
    """Agent CPU per 1000 samples over bare py-spy's, the agent's start-up spread over an
    hour of samples rather than over the round's 45 s (median over rounds)."""
    figures = _figures(results, "agent_cost")
    if figures is None:
        return None
    ratios = []
    for rnd in figures["rounds"]:
        agent, pyspy = rnd["agent"], rnd["pyspy"]
        if not agent["samples"] or not pyspy["samples"] or not pyspy["cpu_s"]:
            continue
        running = (agent["cpu_s"] - agent["startup_cpu_s"]) / agent["samples"]
        amortised = running + agent["startup_cpu_s"] / HOUR_OF_SAMPLES
        ratios.append(amortised / (pyspy["cpu_s"] / pyspy["samples"]))
    return common.median(ratios) if ratios else None


def _agent_rss(results: Results) -> float | None:
    figures = _figures(results, "agent_cost")
    if figures is None or not figures["rounds"]:
        return None
    return max(rnd["agent"]["peak_main_rss_mib"] for rnd in figures["rounds"])


def _worst_against_pyroscope(results: Results) -> float | None:
    """The smallest, over row 1's targets, of the agent's median work ratio less the
    Pyroscope SDK's: at least 0 when the agent is no worse on every target."""
    figures = _figures(results, "slowdown")
    if figures is None:
        return None
    gaps = [common.median(ratios["agent"]) - common.median(ratios["pyroscope"])
            for ratios in figures["ratios"].values()
            if ratios.get("agent") and ratios.get("pyroscope")]
    return min(gaps) if gaps else None


def _ms(value: float) -> str:
    return f"{value:,.0f} ms"


GOALS = (
    Goal("spike analysis over 24 h, warm", "5", "6,257 ms", "<= 500 ms",
         _warm_ms("spikes", DAY), lambda v: v <= 500, _ms),
    Goal("spike analysis over 7 days, warm", "8", "not measured", "<= 2 s",
         _warm_ms("spikes", WEEK, "query_week"), lambda v: v <= 2000, _ms),
    Goal("flame graph, 1 h of 100 instances, warm", "5", "347 ms", "<= 150 ms",
         _warm_ms("flamegraph", HOUR), lambda v: v <= 150, _ms),
    Goal("flame graph, 24 h, warm", "5", "766 ms", "<= 300 ms",
         _warm_ms("flamegraph", DAY), lambda v: v <= 300, _ms),
    Goal("flame graph, 7 days, warm", "8", "not measured", "<= 1 s",
         _warm_ms("flamegraph", WEEK, "query_week"), lambda v: v <= 1000, _ms),
    Goal("diff of two 1 h windows, warm", "5", "1,107 ms", "<= 300 ms",
         _warm_ms("diff", HOUR), lambda v: v <= 300, _ms),
    Goal("bytes on disk per sample, whole file", "6", "2.47", "<= 1.0",
         _bytes_per_sample, lambda v: v <= 1.0, lambda v: f"{v:.2f}"),
    Goal("collector ingest on 2 cores, saturating", "4", "814,020 samples/s",
         ">= 1,500,000 samples/s", _saturated, lambda v: v >= 1_500_000,
         lambda v: f"{v:,.0f} samples/s"),
    Goal("collector CPU per 1M samples at real agent pace, largest fleet", "4", "7.9 CPU-s",
         "<= 2 CPU-s", _paced_cpu, lambda v: v <= 2, lambda v: f"{v:.1f} CPU-s"),
    Goal("ack p99 at real agent pace, largest fleet", "4", "96.7 ms", "< 250 ms",
         _paced_p99, lambda v: v < 250, lambda v: f"{v:,.1f} ms"),
    Goal("agent CPU per 1000 samples vs bare py-spy, start-up amortised over an hour", "2",
         "1.15x (1.33x with a 45 s round's start-up)", "<= 1.1x", _agent_amortised,
         lambda v: v <= 1.1, lambda v: f"{v:.2f}x"),
    Goal("agent main process peak RSS", "2", "47.4 MiB", "< 40 MiB", _agent_rss,
         lambda v: v < 40, lambda v: f"{v:.1f} MiB"),
    Goal("work ratio, agent less Pyroscope's SDK, worst target of row 1", "1",
         "-0.103 (8 threads: 0.872 against 0.975)", ">= 0", _worst_against_pyroscope,
         lambda v: v >= 0, lambda v: f"{v:+.3f}"),
)


def rows(results: Results) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, section, before, measured, goal, verdict) for every goal."""
    out = []
    for goal in GOALS:
        value = goal.measure(results)
        if value is None or math.isnan(value):
            measured, verdict = "not measured in this run", "-"
        else:
            measured, verdict = goal.show(value), "met" if goal.met(value) else "missed"
        out.append((goal.figure, goal.section, goal.before, measured, goal.goal, verdict))
    return out


def markdown(results: Results, size: str) -> str:
    lines = ["## Goals", "",
             f"Each goal beside this run's figure and what `make bench` measured before the work "
             f"on them (commit {BEFORE_COMMIT}). The sections below have each figure's row and what "
             "bounds it.", ""]
    if size != "full":
        lines += [f"This run is size {size}: its figures are not comparable with the goals, "
                  "which are set at size full.", ""]
    lines += ["| figure | section | before | this run | goal | verdict |",
              "|---|---|---:|---:|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows(results)]
    return "\n".join(lines) + "\n"
