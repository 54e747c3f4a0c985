"""Decoded batches as Arrow tables: samples, stacks and frames (telemetry_tables.py
does the telemetry tables; schema.py defines every table)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pyarrow as pa

from pyrometer.collector.rows import DecodedBatch
from pyrometer.collector.schema import (
    FRAME_COLUMNS,
    HWM_COLUMNS,
    SAMPLE_COLUMNS,
    STACK_COLUMNS,
    TABLES,
    arrow_schema,
    create_statements,
)

# the schema used to live here; these names stay importable from this module
__all__ = ["FRAME_COLUMNS", "HWM_COLUMNS", "SAMPLE_COLUMNS", "STACK_COLUMNS", "TABLES",
           "arrow_schema", "create_statements", "frames_table", "samples_table", "stacks_table"]


def samples_table(batches: Sequence[DecodedBatch]) -> pa.Table:
    """One row per (window row) of every batch, with the batch's identity repeated."""
    cols: dict[str, list[object]] = {c.name: [] for c in SAMPLE_COLUMNS}
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
