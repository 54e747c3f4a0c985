"""What bounds each query and storage figure, and what would move it: the prose of
sections 5 and 6, built from the same figures as the tables so that it cannot drift
from them."""

from __future__ import annotations

from typing import Any

from bench import common
from bench.query_report import _exponent, _span, _warm, growth, storage_figures
from pyrometer.collector.analysis.gather import GPU_BUDGET, READERS, REQUEST_BUDGET


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _target_window(result: dict[str, Any]) -> str:
    windows = result["phases"]["flamegraph_phases"]
    wanted = str(result["targets"]["flamegraph_window_s"])
    return wanted if wanted in windows else max(windows, key=int)


def flamegraph_bound(result: dict[str, Any]) -> str:
    phases = result["phases"]["flamegraph_phases"]
    key = _target_window(result)
    p = phases[key]
    warm = _warm(result, "flamegraph", int(key))
    parts = {"the aggregate over the window's rows (DuckDB)": p["aggregate_s"],
             "reading the stacks and frames and sorting": p["read_profile_s"] - p["aggregate_s"],
             "merging the stacks into a count tree (tree.count_tree)": p["tree_s"],
             "writing its JSON text (render.json_tree.tree_json)": p["encode_s"]}
    rest = warm - sum(parts.values())
    rest_text = (f"and {_ms(rest)} for the rest (HTTP, the worker thread, sending "
                 f"{_body_kib(result, int(key))} KiB)" if rest > 0.05 * warm else
                 "which account for about all of it (the phases are timed apart, so they need "
                 "not add up exactly)")
    biggest = max(parts, key=lambda k: parts[k])
    shortest, longest = min(phases, key=int), max(phases, key=int)
    python = p["tree_s"] + p["encode_s"]
    return (
        f"**What bounds the flame graph.** At {_span(int(key))} the warm call takes {_ms(warm)}: "
        + ", ".join(f"{name} {_ms(max(s, 0.0))}" for name, s in parts.items())
        + f", {rest_text}. The largest part is {biggest}. The Python part "
        f"({_ms(python)}) depends on the distinct stacks in the window ({p['stacks']:,}, a tree of "
        f"{p['nodes']:,} nodes), not on its rows: across {result['plan']['instances']} instances "
        f"nearly every stack of the service shows up within minutes, so it does not grow with "
        f"the window: {_ms(phases[shortest]['tree_s'] + phases[shortest]['encode_s'])} at "
        f"{_span(int(shortest))}, {_ms(phases[longest]['tree_s'] + phases[longest]['encode_s'])} at "
        f"{_span(int(longest))} (the spread between such figures is the shared machine's noise). "
        f"The aggregate grows with the rows: {_ms(phases[shortest]['aggregate_s'])} at "
        f"{_span(int(shortest))}, {_ms(phases[longest]['aggregate_s'])} at {_span(int(longest))}; "
        "DuckDB's profile shows it scanning only the row groups of the window (the table is in "
        "time order, so the zone maps on start_ns and end_ns prune the rest), its time split "
        "between the scan and the hash aggregate by stack.\n\n"
        "The flame graph and diff renders run in a worker thread, as the store reads do, so "
        "the event loop that the gRPC ingest server shares keeps running; being Python, the "
        "render still holds the GIL for most of its time, so ingest slows (it is not stopped) "
        "while a large tree is built."
    )


def _body_kib(result: dict[str, Any], window_s: int) -> str:
    found = [t for t in result["timings"] if t["kind"] == "flamegraph" and t["window_s"] == window_s]
    return f"{found[0]['body_bytes'] / 1024:,.0f}" if found else "?"


def flamegraph_moves(result: dict[str, Any]) -> str:
    p = result["phases"]["flamegraph_phases"][_target_window(result)]
    return (
        "**What would move it.** (1) The JSON is written as text straight from the count "
        "tree, one f-string a node with each label encoded once "
        f"({_ms(p['encode_s'])} here); a dict per node and the `json` encoder took about half "
        "as long again. (2) The count tree: a function's key is built once per function (a "
        "fleet's frames differ by line: thousands of frames, a few dozen functions), each "
        "stack's path of functions is kept from one tree to the next (tree.PATHS, bounded as "
        "the store's stack cache is), and a node with one child skips the sort; what is left "
        "is one dictionary step per frame of every distinct stack. A window's tree cached "
        "would cut it further. Both run with Python's cyclic garbage collector paused "
        "(collector/gcpause.py): their objects made it walk the collector's whole heap in "
        "every other call. (3) Long windows: whole hours and "
        "minutes are read from the profile rollups (`samples_1h`, `samples_1m`: per service, "
        "version, thread and stack, summed by a background compaction a couple of minutes "
        "behind real time), and only the "
        "seconds before the first whole minute and after the last one, and the minutes not "
        "yet compacted, from the raw rows; the answer is exactly the raw one, and the "
        "`Pyrometer-Resolution` header says which rollup was used. What is left of a long "
        "window's cost is the tree and the stacks, as for a short one."
    )


def spikes_bound(result: dict[str, Any]) -> str:
    phases = result["phases"]["spike_phases"]
    key = max(phases, key=int)
    p = phases[key]
    reads = p["reads_s"]
    resources = reads.get("process", 0.0) + reads.get("host", 0.0)
    latency = reads.get("latency_quantile", 0.0)
    step, baseline = result["plan"]["step"], result["plan"]["baseline"]
    requests = result["windows"]["requests"].get(key, 0)
    warm = _warm(result, "spikes", int(key))
    around_keys = ("instance_latency", "request_tally", "request_samples", "gpu_readings",
                   "engine_steps", "slowest_requests", "profile")
    around = sum(reads.get(k, 0.0) for k in around_keys)
    parts = ", ".join(f"{k} {_ms(reads[k])}" for k in around_keys if k in reads)
    return (
        f"**What bounds the spike analysis.** Over {_span(int(key))} the warm call takes "
        f"{_ms(warm)}; in-process analyze(), its reads one at a time so that the parts add up "
        f"(the collector runs a spike's reads {READERS} at a time), takes {_ms(p['total_s'])}, "
        "of which the latency "
        f"series {_ms(latency)} (one scan grouped by {step} step and by route and step: of "
        f"the 10 s latency sketches where the window and its {baseline} baseline span an hour "
        f"or more, else a quantile_cont over every request, {requests:,} here; in this second "
        "call the steps settled below the sketches' watermark come from the first: "
        "storage/duckdb/steps_cache.py), "
        f"the process and host points of each spike's steps {_ms(resources)}, the reads "
        f"around each spike {_ms(around)} ({parts}), "
        f"and detection and cause scoring {_ms(p['analysis_s'])}. The last two are per spike, "
        f"not per window, and bounded: the store counts what must be exact (requests per step, "
        "per side and per version, the onset, each instance's percentiles, the slowest) and "
        "sums the engine's readings per step, and the scorers judge a deterministic sample of "
        f"at most about {REQUEST_BUDGET:,} requests and {GPU_BUDGET:,} GPU readings of the "
        f"spike and its {baseline} baseline (all instances); which is why the shortest window "
        f"({_span(min(phases_windows(result)))}, "
        f"{_ms(_warm(result, 'spikes', min(phases_windows(result))))}) costs most of what the "
        "longest does."
    )


def phases_windows(result: dict[str, Any]) -> list[int]:
    """The windows the spike analysis was timed over."""
    return [t["window_s"] for t in result["timings"] if t["kind"] == "spikes"]


def spikes_moves() -> str:
    return (
        "**What would move it.** The window no longer matters much: the latency series is "
        "read from the sketches, a repeated call takes the steps settled below their "
        "watermark from the last one, and the process and host points are read only for each "
        "spike's steps; each stack's functions and stage are kept from one analysis to the "
        "next; the records around a spike are bounded by their sample budgets. What is left "
        "is per spike and fixed: (1) detection and cause scoring in Python: the per-step "
        "baselines of the whole series and of each route, and passes over the sampled "
        "requests (their steps, the size model's logarithms) and GPU readings; (2) the reads "
        "around the spike, each a scan of its own (requests for the sample, the tally and the "
        "slowest could be one), the sampled records a Python object each; (3) the engine's "
        "readings grouped per scrape (time and instance) before their steps, one group a row "
        "in this data."
    )


def growth_note(result: dict[str, Any]) -> str:
    exps = {k: growth(result, k) for k in ("flamegraph", "diff", "spikes")}
    text = ", ".join(f"{k} {_exponent(e)}" for k, e in exps.items())
    return (
        f"**Growth.** Exponents of warm time against the data read, 1 h to the longest window: "
        f"{text} (1 = linear). Short windows are dominated by costs that do not grow with the "
        "window (distinct stacks, the spike's own records, a collector thread hop), long "
        "ones by the scans; no endpoint grows faster than its data."
        if all(e <= 1.05 for e in exps.values() if e == e) else
        f"**Growth.** Exponents of warm time against the data read, 1 h to the longest window: "
        f"{text} (1 = linear); above 1 means the cost per row rises with the window, which "
        "the phases above attribute."
    )


def queries_notes(result: dict[str, Any]) -> str:
    return "\n\n".join([flamegraph_bound(result), flamegraph_moves(result), spikes_bound(result),
                        spikes_moves(), growth_note(result)])


def storage_notes(result: dict[str, Any]) -> str:
    stored, figures = result["storage"], storage_figures(result)
    rows = stored["rows"]["samples"]
    cols = stored["samples_columns"]
    per_row = {c: b / rows for c, b in cols.items()}
    identity = per_row.get("source_no", 0.0)
    rows_per_sample = rows / figures["samples"]
    others = figures["file"] - figures["profile"]
    return (
        f"**What bounds it.** A sample row holds {figures['samples'] / rows:.1f} samples on "
        f"average ({rows_per_sample:.3f} rows per sample), so bytes per sample are bytes per "
        f"row × {rows_per_sample:.3f}. Of the samples table's "
        f"{stored['tables']['samples'] / rows:.1f} bytes per row, stack_no takes "
        f"{per_row.get('stack_no', 0.0):.1f}: the stack's small number in this file, "
        "bit-packed (the 64-bit content hash, which DuckDB's own format would store "
        "uncompressed, 8 bytes a row, is kept once per stack in the stacks dictionary); the "
        f"count takes {per_row.get('count', 0.0):.1f}; the row's sender (service, instance, "
        f"host, agent_id, version) {identity:.2f}, a number into the sources table, "
        "run-length encoded (it was five dictionary-coded strings, about 3.2 bytes a row); the "
        "window's times, seq and pid almost nothing (run-length encoded); the batch's other "
        "labels are the source's too. The thread column holds one or two names, yet shows a "
        "fraction of a byte a row: a bit a row of dictionary index, the rest the free tail "
        "of the blocks its segments end, which the file holds all the same. "
        f"The telemetry tables add {others:.2f} bytes per sample: they grow with time and "
        "requests, not with samples.\n\n"
        "**What would move it.** (1) The telemetry: times are kept to the millisecond and "
        "request spans to the microsecond (schema.py's RESOLUTION: about 2 bytes a row each, "
        "where nanoseconds took 4.3); most of the rest is readings that vary every second "
        "and byte counts, bit-packed over each value's own range, and the engine's values, "
        "doubles of full precision (ALP-RD, about 7 bytes a row). (2) A shorter retention for "
        "raw rows, now that the rollups (see section 5, counted in the whole file above) "
        "keep long windows answerable."
        + ("" if figures["profile"] < result["targets"]["bytes_per_sample"] else
           f"\n\nThe profile tables alone miss the target by "
           f"{figures['profile'] - result['targets']['bytes_per_sample']:.2f} bytes per sample.")
        + f" ({common.verdict(figures['file'], result['targets']['bytes_per_sample'], at_most=True)} "
        "for the whole file.)"
    )
