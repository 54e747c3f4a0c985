"""Storage schema and the conversion of decoded batches into Arrow tables.

Every table is append-only and time-ordered, with no PRIMARY KEY or UNIQUE constraint,
so the same schema can live in Parquet under a DuckLake catalog where several
collectors write at once. Only agent_hwm is ever updated, and only compare-and-set.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pyarrow as pa

from pyrometer.collector.rows import DecodedBatch

SAMPLE_COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("start_ns", "BIGINT", pa.int64()),  # window start, agent clock, ns since epoch
    ("end_ns", "BIGINT", pa.int64()),
    ("service", "VARCHAR", pa.string()),
    ("instance", "VARCHAR", pa.string()),
    ("host", "VARCHAR", pa.string()),
    ("agent_id", "VARCHAR", pa.string()),
    ("seq", "BIGINT", pa.int64()),
    ("version", "VARCHAR", pa.string()),  # labels["version"], "" when none
    ("labels", "VARCHAR", pa.string()),  # the other labels, a JSON object
    ("pid", "INTEGER", pa.int32()),  # sampled process (the target's pid for its own rows)
    ("thread", "VARCHAR", pa.string()),
    ("stack_id", "BIGINT", pa.int64()),
    ("count", "BIGINT", pa.int64()),
    ("rate_hz", "DOUBLE", pa.float64()),
    ("idle_included", "BOOLEAN", pa.bool_()),
)
STACK_COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("stack_id", "BIGINT", pa.int64()),
    ("frame_ids", "BIGINT[]", pa.list_(pa.int64())),  # root first
)
FRAME_COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("frame_id", "BIGINT", pa.int64()),
    ("name", "VARCHAR", pa.string()),
    ("file", "VARCHAR", pa.string()),
    ("line", "INTEGER", pa.int32()),
)
HWM_COLUMNS: tuple[tuple[str, str, pa.DataType], ...] = (
    ("agent_id", "VARCHAR", pa.string()),
    ("seq", "BIGINT", pa.int64()),  # highest batch seq stored for the agent
)
TABLES = {
    "samples": SAMPLE_COLUMNS,
    "stacks": STACK_COLUMNS,
    "frames": FRAME_COLUMNS,
    "agent_hwm": HWM_COLUMNS,
}


def create_statements() -> list[str]:
    """CREATE TABLE IF NOT EXISTS for every table (the schema's single source)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ("
        + ", ".join(f"{name} {sql} NOT NULL" for name, sql, _ in columns)
        + ")"
        for table, columns in TABLES.items()
    ]


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([(name, arrow) for name, _, arrow in TABLES[table]])


def samples_table(batches: Sequence[DecodedBatch]) -> pa.Table:
    """One row per (window row) of every batch, with the batch's identity repeated."""
    cols: dict[str, list[object]] = {name: [] for name, _, _ in SAMPLE_COLUMNS}
    for batch in batches:
        window, src = batch.window, batch.source
        if window is None or not window.counts:
            continue
        n = len(window.counts)
        fixed: dict[str, object] = {
            "start_ns": window.start_ns, "end_ns": window.end_ns, "service": src.service,
            "instance": src.instance, "host": src.host, "agent_id": src.agent_id,
            "seq": batch.seq, "version": src.version, "labels": src.labels_json(),
            "rate_hz": window.rate_hz, "idle_included": window.idle_included,
        }
        for name, value in fixed.items():
            cols[name].extend([value] * n)
        cols["pid"].extend(window.pids)
        cols["thread"].extend(window.threads)
        cols["stack_id"].extend(window.stack_ids)
        cols["count"].extend(window.counts)
    return pa.table(cols, schema=arrow_schema("samples"))


def stacks_table(batches: Sequence[DecodedBatch], known: Collection[int]) -> pa.Table:
    """Stacks of the batches whose id is not in `known`, each id once."""
    new: dict[int, tuple[int, ...]] = {}
    for batch in batches:
        for sid, frames in zip(batch.stacks.ids, batch.stacks.frame_ids, strict=True):
            if sid not in known:
                new.setdefault(sid, frames)
    return pa.table(
        {"stack_id": list(new), "frame_ids": [list(f) for f in new.values()]},
        schema=arrow_schema("stacks"),
    )


def frames_table(batches: Sequence[DecodedBatch], known: Collection[int]) -> pa.Table:
    """Frames of the batches whose id is not in `known`, each id once."""
    new: dict[int, tuple[str, str, int]] = {}
    for batch in batches:
        f = batch.frames
        for fid, name, file, line in zip(f.ids, f.names, f.files, f.lines, strict=True):
            if fid not in known:
                new.setdefault(fid, (name, file, line))
    rows = list(new.values())
    return pa.table(
        {
            "frame_id": list(new),
            "name": [r[0] for r in rows],
            "file": [r[1] for r in rows],
            "line": [r[2] for r in rows],
        },
        schema=arrow_schema("frames"),
    )
