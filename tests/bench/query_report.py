"""Sections 5 (queries) and 6 (storage) of BENCHMARKS.md, from queries.measure()'s figures."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from bench import common

SECOND = 1_000_000_000
COMMAND = ".venv/bin/python tests/bench/queries.py --size full"


def _span(seconds: int) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _ms(seconds: float) -> str:
    return "–" if seconds != seconds else f"{seconds * 1000:,.0f}"


def _warm_cell(values: list[float]) -> str:
    mid, low, high = common.spread([v * 1000 for v in values])
    return f"{mid:,.0f} ({low:,.0f}–{high:,.0f})" if len(values) > 1 else f"{mid:,.0f}"


def _timings(result: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [t for t in result["timings"] if t["kind"] == kind]


def _warm(result: dict[str, Any], kind: str, window_s: int) -> float:
    found = [t for t in _timings(result, kind) if t["window_s"] == window_s]
    return common.median(found[0]["warm_s"]) if found else float("nan")


def _data(result: dict[str, Any], kind: str, window_s: int) -> int:
    """What a call of `kind` reads: sample rows (both sides of a diff), or requests."""
    if kind == "spikes":
        return int(result["windows"]["requests"][str(window_s)])
    span = 2 * window_s if kind == "diff" else window_s
    return int(result["windows"]["samples"][str(span)]["rows"])


def growth(result: dict[str, Any], kind: str) -> float:
    """Exponent of warm time against data read, from the target window (1 h, or the
    shortest at a size without one) to the longest: 1 is linear, below 1 sublinear."""
    windows = sorted(t["window_s"] for t in _timings(result, kind))
    if len(windows) < 2:
        return float("nan")
    low = 3600 if 3600 in windows[:-1] else windows[0]
    high = windows[-1]
    t_low, t_high = _warm(result, kind, low), _warm(result, kind, high)
    d_low, d_high = _data(result, kind, low), _data(result, kind, high)
    if min(t_low, t_high, d_low, d_high) <= 0 or d_low == d_high:
        return float("nan")
    return math.log(t_high / t_low) / math.log(d_high / d_low)


def _data_paragraph(result: dict[str, Any]) -> str:
    plan, day, rows = result["plan"], result["day"], result["storage"]["rows"]
    samples = result["storage"]["samples"]
    end = datetime.fromtimestamp(day["end_ns"] / SECOND, UTC).strftime("%Y-%m-%d %H:%M UTC")
    fills = ", ".join(f"{name} {s:.1f} s" for name, s in result["fill_s"].items())
    return (
        f"**Data.** One service, {plan['instances']} instances, {_span(plan['seconds'])} ending "
        f"{end}: {rows['samples']:,} sample rows holding {samples:,} samples (100 Hz; each instance "
        f"sends a 10 s window of 50–150 (stack, thread) rows, counts by 1/rank adding up to about "
        f"1000, drawn from {plan['stacks']:,} distinct stacks of depth 20–40 with "
        f"{rows['frames']:,} distinct frames, two threads, a version label); "
        f"{rows['requests']:,} requests ({plan['request_rate']} per second per instance, two "
        f"routes); 1 Hz GPU, process and host readings ({rows['gpu']:,} rows each); a rolling "
        f"deploy {_span(plan['deploy_ago_s'])} before the end (one deploy event per instance, new "
        f"version and pid). The spike: {_span(plan['spike_ago_s'])} before the end, for "
        f"{_span(plan['spike_s'])}, 40% of the GPUs throttle (thermal slowdown), their requests "
        "take three times as long and their hottest stack waits on the GPU.\n\n"
        f"**Fill.** {result['fill_total_s']:.0f} s ({fills}): the tables are created by the "
        "collector's own store, then filled by one INSERT … SELECT over range() per table, "
        "values from DuckDB's hash() (reproducible), stack and frame ids the collector's own "
        "64-bit content hashes. Rows go in the order real ingest appends them: a window at a "
        "time, and in it each instance's batch whole (its profile rows, then its 10 s of "
        "readings and requests in time order), as batches from many agents arrive (until commit "
        "8a71f4e the telemetry went second by second across all instances, which cost 72 MiB "
        "more of the full day's file). Caveats: real ingest "
        "appends a few thousand rows per commit and checkpoints as it goes, where this writes "
        "whole row groups and checkpoints once (the checkpointed layout and compression are the "
        "same); a late batch (an agent's spool after an outage) would break the time order and "
        "widen some row groups' time ranges, which is not modelled; every instance runs the "
        "same code, so the stack dictionary is shared by all."
    )


def _flamegraph_table(result: dict[str, Any]) -> list[str]:
    lines = ["| window | sample rows | samples | cold ms | warm ms, median (range) | "
             "warm ms per M rows | body KiB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for t in _timings(result, "flamegraph") + _timings(result, "folded"):
        data = result["windows"]["samples"][str(t["window_s"])]
        per_m = common.median(t["warm_s"]) * 1000 / (data["rows"] / 1e6) if data["rows"] else math.nan
        label = _span(t["window_s"]) + (" (folded)" if t["kind"] == "folded" else "")
        lines.append(f"| {label} | {data['rows']:,} | {data['samples']:,} | {_ms(t['cold_s'])} | "
                     f"{_warm_cell(t['warm_s'])} | {per_m:,.1f} | {t['body_bytes'] / 1024:,.0f} |")
    return lines


def _diff_table(result: dict[str, Any]) -> list[str]:
    lines = ["| each window | sample rows, both | samples, baseline / target | cold ms | "
             "warm ms, median (range) | body KiB |", "|---|---:|---:|---:|---:|---:|"]
    for t in _timings(result, "diff"):
        rows = _data(result, "diff", t["window_s"])
        d = t["detail"]
        lines.append(f"| {_span(t['window_s'])} | {rows:,} | {d['baseline_samples']:,} / "
                     f"{d['target_samples']:,} | {_ms(t['cold_s'])} | {_warm_cell(t['warm_s'])} | "
                     f"{t['body_bytes'] / 1024:,.0f} |")
    return lines


def _spike_found(detail: dict[str, Any]) -> str:
    first = detail.get("first")
    if not first:
        return f"{detail['spikes']} ({detail['status']})"
    causes = ", ".join(first["causes"]) or "none ranked"
    return (f"{detail['spikes']}: {first['start'][11:19]}–{first['end'][11:19]}, p99 "
            f"{first['peak_ms']:.0f} ms vs {first['baseline_ms']:.0f} ms; causes: {causes}")


def _spikes_table(result: dict[str, Any]) -> list[str]:
    lines = ["| window | requests read (window + baseline) | cold ms | warm ms, median (range) | "
             "spikes found, the first one |", "|---|---:|---:|---:|---|"]
    for t in _timings(result, "spikes"):
        lines.append(f"| {_span(t['window_s'])} | {_data(result, 'spikes', t['window_s']):,} | "
                     f"{_ms(t['cold_s'])} | {_warm_cell(t['warm_s'])} | {_spike_found(t['detail'])} |")
    return lines


def _exponent(value: float) -> str:
    """A growth exponent, or a dash where the size has fewer than two windows."""
    return "–" if value != value else f"{value:.2f}"


def _targets(result: dict[str, Any]) -> list[str]:
    tg = result["targets"]
    flame = _warm(result, "flamegraph", tg["flamegraph_window_s"])
    spikes = _warm(result, "spikes", tg["spikes_window_s"])
    exps = {k: growth(result, k) for k in ("flamegraph", "diff", "spikes")}
    worst = max((e for e in exps.values() if e == e), default=math.nan)
    exp_text = ", ".join(f"{k} {_exponent(e)}" for k, e in exps.items())
    return [
        "| target | measured (warm median) | verdict |", "|---|---:|---|",
        f"| flame graph of 1 h of the service < {tg['flamegraph_s'] * 1000:.0f} ms | {_ms(flame)} ms | "
        f"{common.verdict(flame, tg['flamegraph_s'], at_most=True)} |",
        f"| spike analysis over 24 h < {tg['spikes_s'] * 1000:.0f} ms | {_ms(spikes)} ms | "
        f"{common.verdict(spikes, tg['spikes_s'], at_most=True)} |",
        "| cost grows no faster than the data in the window: exponent of warm time against rows "
        f"read, 1 h → longest, ≤ 1 | {exp_text} | {common.verdict(worst, 1.05, at_most=True)} "
        "(≤ 1.05 for noise) |",
    ]


def _sql_lines(result: dict[str, Any]) -> list[str]:
    lines = ["| window | DuckDB total ms | rows scanned | row groups scanned / in table | "
             "costliest operators (ms, rows out) |", "|---|---:|---:|---:|---|"]
    for w, p in result["phases"]["flamegraph_sql"].items():
        ops = "; ".join(f"{op['name']} {op['s'] * 1000:,.0f} ({op['rows']:,})" for op in p["operators"])
        lines.append(f"| {_span(int(w))} | {_ms(p['total_s'])} | {p['rows_scanned']:,} | "
                     f"{p['row_groups_scanned']:,} / {p['row_groups_in_table']:,} | {ops} |")
    return lines


def _phase_lines(result: dict[str, Any]) -> list[str]:
    lines = ["| window | distinct stacks | tree nodes | read_profile ms | of which aggregate SQL | "
             "of which stacks and frames | count tree ms | JSON text ms "
             "| HTTP warm ms |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w, p in result["phases"]["flamegraph_phases"].items():
        lines.append(f"| {_span(int(w))} | {p['stacks']:,} | {p['nodes']:,} | {_ms(p['read_profile_s'])} | "
                     f"{_ms(p['aggregate_s'])} | {_ms(p['stacks_s'])} | {_ms(p['tree_s'])} | "
                     f"{_ms(p['encode_s'])} | "
                     f"{_ms(_warm(result, 'flamegraph', int(w)))} |")
    return lines


def _spike_phase_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for w, p in result["phases"]["spike_phases"].items():
        reads = ", ".join(f"{name} {s * 1000:,.0f} ms ({p['calls'][name]}×)"
                          for name, s in p["reads_s"].items())
        lines.append(f"- spike analysis over {_span(int(w))}, in-process, reads one at a time: "
                     f"{p['total_s'] * 1000:,.0f} ms; "
                     f"store reads: {reads}; detection and cause scoring "
                     f"{p['analysis_s'] * 1000:,.0f} ms.")
    return lines


def _pyspy_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for call, found in result["pyspy"].items():
        if "error" in found:
            lines.append(f"- py-spy of the collector during {call} s: not taken ({found['error']}).")
            continue
        top = ", ".join(f"{name} {share:.0%}" for name, share in found["inclusive"][:12])
        leaf = ", ".join(f"{name} {share:.0%}" for name, share in found["leaf"][:6])
        lines.append(f"- py-spy of the collector during warm calls of {call} s ({found['samples']:,} "
                     f"samples of active Python threads): on the stack: {top}. On top: {leaf}.")
    return lines


def queries_section(result: dict[str, Any]) -> str:
    plan = result["plan"]
    parts = [
        "## 5. Queries",
        f"Command: `{COMMAND}` (part of `make bench`). This run: size {result['size']}, "
        f"{result['total_s']:.0f} s in all, fill included.",
        _data_paragraph(result),
        "**Method.** A real collector (`pyrometer collector --db FILE --retention off`) on the "
        "filled file answers over HTTP. Each endpoint and window gets a fresh collector: "
        "the first call is *cold* (DuckDB's buffer pool empty; the file itself sits in the "
        f"OS page cache, having just been written), then {plan['warm']} *warm* calls (3 when "
        "the cold one took over 1 s). Times are wall-clock from request to last byte at the "
        "client. Windows end at the end of the data.",
        "\n".join(_targets(result)),
        "**Flame graphs** (`/api/v1/flamegraph`, JSON tree)",
        "\n".join(_flamegraph_table(result)),
        "**Diffs** (`/api/v1/flamegraph/diff`: the last window against the one before it; a "
        "24 h diff would need two days of data, so the longest is 2 × 12 h of this day)",
        "\n".join(_diff_table(result)),
        f"**Spike analysis** (`/api/v1/spikes`, step {plan['step']}, baseline {plan['baseline']}, "
        "p99; one step for every window so that the curve compares: at the default 10 s step a "
        "24 h window with its baseline is 8,820 buckets)",
        "\n".join(_spikes_table(result)),
        "**Where the time goes.** Read with the collector stopped, in-process on the same file, "
        "each step the best of two runs:",
        "\n".join(_phase_lines(result)),
        "DuckDB's profiler (EXPLAIN ANALYZE) on the flame graph's aggregate:",
        "\n".join(_sql_lines(result)),
        "\n".join(_spike_phase_lines(result) + _pyspy_lines(result)),
    ]
    return "\n\n".join(parts)


def _storage_rows(stored: dict[str, Any], samples: int) -> list[str]:
    lines = ["| table | rows | MiB | bytes per row | bytes per sample |", "|---|---:|---:|---:|---:|"]
    for table, size in sorted(stored["tables"].items(), key=lambda kv: -kv[1]):
        rows = stored["rows"][table]
        # an empty table (the hour rollup of a run shorter than an hour) has no bytes per row
        per_row = f"{size / rows:,.2f}" if rows else "–"
        lines.append(f"| {table} | {rows:,} | {size / common.MIB:,.1f} | {per_row} | "
                     f"{size / samples:.3f} |")
    return lines


def _column_rows(stored: dict[str, Any]) -> list[str]:
    rows = stored["rows"]["samples"]
    lines = ["| samples column | MiB | bytes per row | DuckDB compression |", "|---|---:|---:|---|"]
    for column, size in stored["samples_columns"].items():
        lines.append(f"| {column} | {size / common.MIB:,.1f} | {size / rows:.2f} | "
                     f"{stored['samples_compression'].get(column, '?')} |")
    return lines


# the rollups are profile data too: they are counted with the raw rows they sum
PROFILE_TABLES = ("samples", "samples_1m", "samples_1h", "stacks", "frames")


def storage_figures(result: dict[str, Any]) -> dict[str, float]:
    stored = result["storage"]
    samples = stored["samples"]
    profile = sum(stored["tables"].get(t, 0) for t in PROFILE_TABLES)
    return {"samples": samples, "file": stored["file_bytes"] / samples,
            "profile": profile / samples, "samples_table": stored["tables"]["samples"] / samples}


def storage_section(result: dict[str, Any]) -> str:
    stored, figures = result["storage"], storage_figures(result)
    target = result["targets"]["bytes_per_sample"]
    return "\n\n".join([
        "## 6. Storage",
        f"Command: `{COMMAND}` (the same run as section 5). The database file after the fill's "
        f"CHECKPOINT: {stored['file_bytes'] / common.MIB:,.0f} MiB ({stored['used_bytes'] / common.MIB:,.0f} "
        f"MiB in used blocks) for {int(figures['samples']):,} samples.",
        "| target | measured | verdict |\n|---|---:|---|\n"
        f"| bytes on disk per sample < {target:g}, whole file | {figures['file']:.3f} | "
        f"{common.verdict(figures['file'], target, at_most=True)} |\n"
        f"| the same, profile tables only ({', '.join(PROFILE_TABLES)}) | {figures['profile']:.3f} | "
        f"{common.verdict(figures['profile'], target, at_most=True)} |",
        "Per table (sizes from DuckDB's storage_info: each segment runs from its offset to the "
        "next segment's in its block, the last one to the block's end; they add up to the used "
        "blocks, and a table smaller than a block shows a whole block):",
        "\n".join(_storage_rows(stored, int(figures["samples"]))),
        "\n".join(_column_rows(stored)),
        _parquet_line(result, figures),
    ])


def _parquet_line(result: dict[str, Any], figures: dict[str, float]) -> str:
    parquet = result.get("parquet")
    if not parquet:
        return ""
    rows, samples = parquet["rows"], parquet["samples"]
    return (f"For comparison, the sample rows of the last {_span(parquet['slice_s'])} "
            f"({rows:,} rows) written as Parquet (zstd), the file format of the DuckLake layout: "
            f"{parquet['table'] / samples:.3f} bytes per sample ({parquet['table'] / rows:.2f} per "
            f"row), of which stack_no {parquet['stack_no'] / rows:.2f} bytes per row.")
