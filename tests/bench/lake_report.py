"""The sections of BENCHMARKS-lake.md, from lake_ingest's and lake_files' figures."""

from __future__ import annotations

from typing import Any

from bench import common

INGEST_COMMAND = ".venv-lake/bin/python tests/bench/lake_ingest.py --size full"
FILES_COMMAND = ".venv-lake/bin/python tests/bench/lake_files.py --size full"
HOUR_S = 3600.0


def _load(level: dict[str, Any]) -> str:
    spec = level["level"]
    if spec["mode"] == "closed":
        return f"{spec['streams']:,} agents, saturating ({spec['in_flight']} in flight each)"
    return f"{spec['streams']:,} agents, one batch / {spec['period_s']:g} s each"


def _store(level: dict[str, Any]) -> str:
    if level["backend"] == "file":
        return "embedded file"
    n = level["collectors"]
    return f"lake, {n} collector{'s' if n > 1 else ''}"


def _per_collector(level: dict[str, Any]) -> str:
    """Batches each collector stored over the whole level (warm-up and set-up included)."""
    shares = [f"{c['batches']:,.0f}" for c in level["per_collector"]]
    return " / ".join(shares)


def _stored(lv: dict[str, Any]) -> str:
    if lv["lossless"]:
        return "yes"
    if lv["stored_samples"] != lv["acked_samples"]:
        return f"**no** ({lv['stored_samples']:,} of {lv['acked_samples']:,})"
    failed = lv.get("failed_streams", len(lv["errors"]))
    return (f"yes, but {failed} stream{'s' if failed > 1 else ''} failed (a commit given up: "
            "INTERNAL, its unacknowledged batches a real agent would send again)")


# the tables ingest writes files for, in the order of the files-per-hour table
FILE_TABLES = ("samples", "gpu", "host", "process", "stacks", "frames", "agent_hwm")


def _files_per_hour(levels: list[dict[str, Any]]) -> list[str]:
    """New Parquet files per table per hour of ingest, at each lake level's pace."""
    lake = [lv for lv in levels if lv["backend"] == "lake"]
    if not lake:
        return []
    lines = ["| lake, load | " + " | ".join(FILE_TABLES) + " | all tables |",
             "|---|" + "---:|" * (len(FILE_TABLES) + 1)]
    for lv in lake:
        got, wall = lv["measured"], lv["observed"]["wall_s"]
        per_h = {k.removeprefix("files."): v * HOUR_S / wall for k, v in got.items()
                 if k.startswith("files.")}
        cells = " | ".join(f"{per_h.get(t, 0.0):,.0f}" for t in FILE_TABLES)
        lines.append(f"| {_store(lv)}, {_load(lv)} | {cells} | {sum(per_h.values()):,.0f} |")
    return lines


def _ingest_row(lv: dict[str, Any]) -> str:
    seen, got = lv["observed"], lv["measured"]
    wall = seen["wall_s"]
    commits = got.get("commits", 0.0)
    per_commit = got.get("batches", 0.0) / commits if commits else float("nan")
    files = got.get("files.samples")
    files_h = "–" if files is None else f"{files / wall * HOUR_S:,.0f}"
    stored = _stored(lv)
    return (f"| {_store(lv)} | {_load(lv)} | {lv['samples_per_s']:,.0f} | {lv['ack_ms']['p50']:,.0f} "
            f"| {lv['ack_ms']['p99']:,.0f} | {seen['collector_cores']:.2f} "
            f"| {lv['collector_cpu_s_per_million']:.1f} | {commits / wall:.1f} | {per_commit:.1f} "
            f"| {got.get('conflicts', 0.0):,.0f} | {got.get('failures', 0.0):,.0f} | {files_h} "
            f"| {_per_collector(lv)} | {seen['other_cores']:.2f} | {stored} |")


def _ingest_table(levels: list[dict[str, Any]]) -> list[str]:
    lines = ["| store | load | samples/s | ack p50 ms | ack p99 ms | collectors' CPU, cores "
             "| collector CPU s / 1M samples | commits/s | batches / commit | conflicts "
             "| commits given up | samples files / h | batches stored per collector "
             "| other CPU, cores | stored = acked |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    return lines + [_ingest_row(lv) for lv in levels]


def _by(levels: list[dict[str, Any]], mode: str) -> dict[int, dict[str, Any]]:
    return {lv["collectors"]: lv for lv in levels
            if lv["backend"] == "lake" and lv["level"]["mode"] == mode}


def _scaling(levels: list[dict[str, Any]]) -> list[str]:
    """What adding collectors did, in this run's numbers."""
    lines = []
    for mode, what in (("closed", "Saturated"), ("paced", "At a fixed offered load")):
        by = _by(levels, mode)
        if 1 not in by or len(by) < 2:
            continue
        one = by[1]
        parts = []
        for n, lv in sorted(by.items()):
            if n == 1:
                continue
            got = lv["measured"]
            parts.append(f"{n} collectors {lv['samples_per_s']:,.0f} samples/s "
                         f"({lv['samples_per_s'] / one['samples_per_s']:.2f}× one), ack p99 "
                         f"{lv['ack_ms']['p99']:,.0f} ms, {_count(got.get('conflicts', 0), 'conflict')} "
                         f"and {_count(got.get('failures', 0), 'commit')} given up")
        lines.append(f"{what} ({_load(one)}), one collector stored "
                     f"{one['samples_per_s']:,.0f} samples/s with an ack p99 of "
                     f"{one['ack_ms']['p99']:,.0f} ms; " + "; ".join(parts) + ".")
    return lines


def _count(n: float, noun: str) -> str:
    return f"{n:,.0f} {noun}{'' if round(n) == 1 else 's'}"


def _baseline(levels: list[dict[str, Any]]) -> list[str]:
    file = next((lv for lv in levels if lv["backend"] == "file"), None)
    lake = _by(levels, "closed").get(1)
    if file is None or lake is None:
        return []
    return [f"Against the embedded file on the same DuckDB and the same load, one lake "
            f"collector stored {lake['samples_per_s'] / file['samples_per_s']:.2f}× the samples "
            f"per second at {lake['collector_cpu_s_per_million'] / file['collector_cpu_s_per_million']:.1f}× "
            "the collector CPU per sample: each group commit writes a Parquet file per table "
            "and runs its transaction against the PostgreSQL catalog, which the file does not."]


def ingest_markdown(result: dict[str, Any]) -> str:
    """Section L1 of BENCHMARKS-lake.md."""
    levels = result["levels"]
    lines = [
        "## L1. Lake ingest, 1-3 collectors", "",
        f"Collector ingest (row 4 of BENCHMARKS.md, the same load generators and batches) "
        f"into one DuckLake, on this {result['cpus']}-core machine: each level a fresh lake (an "
        "empty catalog database, Parquet files in a local folder) and 1, 2 or 3 real collector "
        "processes on it, agent i sending to collector i mod n; first a level with the "
        "embedded file on the same DuckDB as the baseline. Maintenance is off during the load "
        "(L3 measures it). The collectors, the PostgreSQL server and the load generators all "
        "share the machine's cores, so past one collector this measures what the lake's "
        "commits do to each other, not what more machines would add.", "",
        f"Command: `{INGEST_COMMAND}` ({result['size']} size, {result['elapsed_s']:.0f} s).", "",
        *_ingest_table(levels), "",
        "Counted over the measured interval: samples/s, acks, CPU, commits (group commits, "
        "each one transaction), conflicts (a commit run again from the start after another "
        "collector's transaction won: `pyrometer_commit_conflicts`), commits given up after "
        "10 tries (`pyrometer_commit_failures`: the group is then committed batch by batch, "
        "and a batch that fails again is not acknowledged), and the samples table's new "
        "Parquet files, per hour at that rate. Batches stored per collector are over the "
        "whole level. Other CPU is every other process on the machine, PostgreSQL's among "
        "them. Stored = acked compares the samples one collector's API reports for the whole "
        "lake with the samples acked by all.", "",
        *_scaling(levels), "",
        *_baseline(levels), "",
        "Parquet files that ingest wrote per hour, by table, at each level's pace (before "
        "any maintenance: a group commit writes a file for each table it gives more than 10 "
        "rows, and keeps fewer in the catalog, inlined; L3 shows what a pass makes of them):", "",
        *_files_per_hour(levels), "",
        "Why, as far as one machine can say: commits of several collectors no longer "
        "conflict (each collector owns the agents it stores for and appends their marks, "
        "docs/lake.md; the conflicts column counts any that remain), but every commit has "
        "a cost of its own (a Parquet file a table, a transaction against the catalog), "
        "and here all the collectors share the same two cores. Spreading the same agents "
        "over more collectors makes smaller commits, so more of that cost per sample (the "
        "CPU per 1M samples column), on cores no more numerous. What collectors on "
        "machines of their own would add is not measured here.",
    ]
    return "\n".join(lines).rstrip() + "\n"


def _files_table(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    lines = ["| table | Parquet files before | rows inlined before | in the data path before "
             "| Parquet files after | rows inlined after | in the data path after |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for table, was in before["tables"].items():
        now = after["tables"].get(table, {"parquet": 0, "inlined_rows": 0, "on_disk": 0})
        if not any((was["parquet"], was["inlined_rows"], now["parquet"], now["inlined_rows"])):
            continue
        lines.append(f"| {table} | {was['parquet']:,} | {was['inlined_rows']:,} "
                     f"| {was.get('on_disk', 0):,} | {now['parquet']:,} | {now['inlined_rows']:,} "
                     f"| {now.get('on_disk', 0):,} |")
    named = [f"{s['catalog']['data_files']:,} data + {s['catalog']['delete_files']:,} delete files"
             for s in (before, after)]
    lines.append(f"| *all tables* | {named[0]} | | {before['on_disk']:,} | {named[1]} | "
                 f"| {after['on_disk']:,} |")
    return lines


def _beyond(state: dict[str, Any]) -> tuple[int, str]:
    """Files in the data path beyond those the current snapshot names, and the table
    with the most of them."""
    extra = state["on_disk"] - state["catalog"]["data_files"] - state["catalog"]["delete_files"]
    table = max(state["tables"], key=lambda t: state["tables"][t].get("on_disk", 0)
                - state["tables"][t]["parquet"])
    return extra, table


def _unnamed(result: dict[str, Any]) -> list[str]:
    """What the data path holds beyond the current snapshot's files, before and after."""
    before, table = _beyond(result["before"])
    after, _ = _beyond(result["after"])
    if before <= 0 and after <= 0:
        return []
    lines = []
    if before > 0:
        lines.append(f"Before the pass the data path held {before:,} files more than the current "
                     f"snapshot names, most of them {table}'s: files that only older snapshots "
                     "name (a high-water-mark update replaces rows, and DuckLake keeps the "
                     "replaced files for time travel until their snapshots are expired).")
    lines.append("After it, " + ("none: the expire and cleanup steps deleted them." if after <= 0
                                 else f"{after:,} remain, for a later cleanup or, if no snapshot "
                                 "ever named them, for the orphan step (once an hour old)."))
    return [" ".join(lines)]


def _query_rows(result: dict[str, Any]) -> list[str]:
    target = result["target_s"]
    lines = ["| lake | samples table's Parquet files | cold s (fresh collector) "
             "| warm s (median, range) | samples merged | warm < "
             f"{target * 1000:.0f} ms |", "|---|---:|---:|---:|---:|---|"]
    for state, label in (("before", "as ingest left it"), ("after", "after a maintenance pass")):
        t = result["flamegraph"][state]
        files = result[state]["tables"]["samples"]["parquet"]
        warm = common.median(t["warm_s"])
        lines.append(f"| {label} | {files:,} | {t['cold_s']:.3f} | {common.cell(t['warm_s'])} "
                     f"| {t['detail']['samples']:,} | "
                     f"{common.verdict(warm, target, at_most=True)} |")
    return lines


def files_markdown(result: dict[str, Any]) -> str:
    """Sections L2 and L3 of BENCHMARKS-lake.md."""
    plan, fill, pass_ = result["plan"], result["fill"], result["maintenance"]
    span_min = plan["span_s"] / 60
    commits = fill["commits"]["commits"]
    steps = ", ".join(f"{step} {s:.2f}" for step, s in pass_["steps_s"].items())
    filled = (f"{plan['agents']:,} agents of one service, {plan['windows']:,} windows of 10 s "
              f"each ({span_min:g} minutes of data, {fill['acked_samples']:,} samples), sent "
              f"as fast as acks came back through {plan['collectors']} collector processes, "
              f"which stored them in {fill['wall_s']:.0f} s in {commits:,.0f} group commits "
              f"({fill['acked_batches'] / commits:.1f} batches each; "
              f"{_count(fill['commits']['conflicts'], 'conflict')}, "
              f"{_count(fill['commits']['failures'], 'commit')} given up)")
    lines = [
        f"## L2. A {span_min:g}-minute flame graph over the lake", "",
        f"The lake holds {filled}. A JSON flame graph of the whole span from "
        "`/api/v1/flamegraph`, timed as row 5 of BENCHMARKS.md times the embedded file: cold "
        "is a fresh collector process's first call (the catalog read from PostgreSQL, the "
        "Parquet footers read, DuckDB's caches empty; the operating system's page cache "
        "holds the files either way), warm the median of the next calls.", "",
        f"Command: `{FILES_COMMAND}` ({result['size']} size, {result['elapsed_s']:.0f} s, with L3).", "",
        *_query_rows(result), "",
        "## L3. Parquet files per table, before and after a maintenance pass", "",
        f"The same lake: its files as ingest left them, and after one maintenance pass "
        f"(`maintain_once`, as the collectors run it every --maintenance-interval, here with "
        f"snapshots expired at once). The pass was {pass_['result']} in "
        f"{pass_['wall_s']:.1f} s (seconds by step: {steps}). Before a pass a table has a "
        "file for every commit that gave it more than 10 rows, so the count grows with the "
        "commit rate, not the data: per hour of ingest at L1's loads, see the files-per-hour "
        "table there; a pass every 5 minutes (the default) bounds what reads meet to that "
        "rate times 5 minutes, and leaves one file per table and merge.", "",
        *_files_table(result["before"], result["after"]), "",
        *_unnamed(result), "",
        f"In the data path: {result['before']['bytes'] / common.MIB:.1f} MiB of Parquet before, "
        f"{result['after']['bytes'] / common.MIB:.1f} MiB after.",
    ]
    return "\n".join(lines).rstrip() + "\n"
