"""Decoded batches as Arrow tables: samples, stacks and frames (telemetry_tables.py
does the telemetry tables; schema.py defines every table)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import accumulate, chain

import pyarrow as pa
import pyarrow.compute as pc

from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.schema import (
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
           "arrow_schema", "create_statements", "frames_table", "repeated", "samples_table",
           "stacks_table"]

# samples columns that hold one value per batch (the others hold one per window row)
_SAMPLE_FIXED = ("start_ns", "end_ns", "service", "instance", "host", "agent_id", "seq",
                 "version", "labels", "rate_hz", "idle_included")


def repeated(values: Sequence[object], lengths: Sequence[int], type_: pa.DataType) -> pa.Array:
    """`values[i]` repeated `lengths[i]` times (every length > 0), expanded in Arrow.

    A batch's identity is the same on each of its rows; converting one Python value
    per batch and expanding it in C++ is far cheaper than converting one per row.
    """
    run_ends = pa.array(list(accumulate(lengths)), pa.int64())
    return pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(run_ends, pa.array(values, type_)))


def samples_table(batches: Sequence[DecodedBatch]) -> pa.Table:
    """One row per (window row) of every batch, with the batch's identity repeated."""
    windows = [(b, b.window) for b in batches if b.window is not None and b.window.counts]
    fixed: dict[str, list[object]] = {name: [] for name in _SAMPLE_FIXED}
    lengths: list[int] = []
    for batch, window in windows:
        src = batch.source
        lengths.append(len(window.counts))
        for name, value in zip(_SAMPLE_FIXED, (
                window.start_ns, window.end_ns, src.service, src.instance, src.host,
                src.agent_id, batch.seq, src.version, src.labels_json(), window.rate_hz,
                window.idle_included), strict=True):
            fixed[name].append(value)
    per_row: dict[str, list[Sequence[object]]] = {
        "pid": [w.pids for _, w in windows], "thread": [w.threads for _, w in windows],
        "stack_id": [w.stack_ids for _, w in windows], "count": [w.counts for _, w in windows],
    }
    schema = arrow_schema("samples")
    columns = [
        repeated(fixed[f.name], lengths, f.type) if f.name in fixed
        else pa.array(list(chain.from_iterable(per_row[f.name])), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _all_known(ids: Sequence[int], known: Collection[int]) -> bool:
    # every batch carries all the frames and stacks it uses, and in the steady state the
    # store has them all: a set test in C skips a Python loop over each batch's ids
    if isinstance(known, (set, frozenset)):
        return known.issuperset(ids)
    return all(i in known for i in ids)


def stacks_table(batches: Sequence[DecodedBatch], known: Collection[int]) -> pa.Table:
    """Stacks of the batches whose id is not in `known`, each id once."""
    new: dict[int, tuple[int, ...]] = {}
    for batch in batches:
        if _all_known(batch.stacks.ids, known):
            continue
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
        if _all_known(f.ids, known):
            continue
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
