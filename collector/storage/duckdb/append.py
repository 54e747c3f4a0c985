"""Decoded batches as Arrow tables, one per storage table (schema.py defines them all).

Profiles: samples (one row per window row, the batch's identity repeated), stacks and
frames (only the ids this store has not seen). Telemetry: gpu, process, host, requests,
events, agent_stats and engine, one row per record with the batch's identity (its number
in sources, and seq; events the identity's strings) and the record's own time and
fields. Values the agent did not send stay NULL, never zero, so an average over a step is
an average of what was measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import fields
from functools import cache
from itertools import accumulate, chain
from operator import attrgetter
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from pyrometer.agent.shared.model import (
    AgentStats,
    EngineReading,
    Event,
    GpuReading,
    HostReading,
    ProcessReading,
    RequestRecord,
    Telemetry,
)
from pyrometer.collector.storage.batch import Columns, DecodedBatch, Source
from pyrometer.collector.storage.duckdb.schema import (
    FILE_TABLES,
    SOURCE_KEY,
    SOURCED_TABLES,
    TABLES,
    Column,
    Layout,
    arrow_schema,
    numbers_sources,
    stored_name,
)
from pyrometer.collector.storage.reads import API_AGENT_ID

# samples columns that hold one value per batch (the others hold one per window row)
_SAMPLE_FIXED = ("start_ns", "end_ns", "service", "instance", "host", "agent_id", "seq",
                 "version", "labels", "rate_hz", "idle_included")


def repeated(values: Sequence[object], lengths: Sequence[int], type_: pa.DataType) -> pa.Array:
    """`values[i]` repeated `lengths[i]` times (every length > 0), expanded in Arrow.

    A batch's identity is the same on each of its rows; converting one Python value
    per batch and expanding it in C++ is far cheaper than converting one per row.
    Built from its buffers: `RunEndEncodedArray.from_arrays` tries to import dateutil on
    every call (pyarrow 26, where dateutil is not installed), 84 us a call against 20.
    """
    ends = list(accumulate(lengths))
    run_ends = pa.array(ends, pa.int64())
    encoded = pa.RunEndEncodedArray.from_buffers(
        pa.run_end_encoded(pa.int64(), type_), ends[-1] if ends else 0, [None], 0, 0,
        [run_ends, pa.array(values, type_)])
    return pc.run_end_decode(encoded)


def samples_table(batches: Sequence[DecodedBatch], stack_nos: Mapping[int, int],
                  schema: pa.Schema | None = None,
                  source_nos: Mapping[SourceKey, int] | None = None) -> pa.Table:
    """One row per (window row) of every batch, with the batch's identity repeated and
    each stack by its number (`stack_nos`: stack id -> stacks.stack_no); `schema`: the
    samples rows' (default: the lake's, the five source strings on every row), and where
    it has a source_no, each batch's source by its number (`source_nos`)."""
    windows = [(b, b.window) for b in batches if b.window is not None and b.window.counts]
    fixed: dict[str, list[object]] = {name: [] for name in (*_SAMPLE_FIXED, "source_no")}
    lengths: list[int] = []
    for batch, window in windows:
        src = batch.source
        lengths.append(len(window.counts))
        for name, value in zip(_SAMPLE_FIXED, (
                window.start_ns, window.end_ns, src.service, src.instance, src.host,
                src.agent_id, batch.seq, src.version, src.labels_json(), window.rate_hz,
                window.idle_included), strict=True):
            fixed[name].append(value)
        if source_nos is not None:
            fixed["source_no"].append(source_nos[source_key(src)])
    per_row: dict[str, list[Sequence[object]]] = {
        "pid": [w.pids for _, w in windows], "thread": [w.threads for _, w in windows],
        "stack_no": [list(map(stack_nos.__getitem__, w.stack_ids)) for _, w in windows],
        "count": [w.counts for _, w in windows],
    }
    schema = schema or arrow_schema("samples")
    if "source_no" in schema.names and source_nos is None:
        raise ValueError("samples rows that hold a source number need the sources' numbers")
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
    if isinstance(known, Mapping):
        return known.keys() >= set(ids)
    return all(i in known for i in ids)


def stacks_table(batches: Sequence[DecodedBatch], known: Mapping[int, int], next_no: int | None,
                 schema: pa.Schema | None = None) -> tuple[pa.Table, dict[int, int]]:
    """Stacks of the batches whose id is not in `known` (id -> number), each id once,
    numbered from `next_no` on (None: each numbered by its own id, for a `schema` whose
    stack_no is 64-bit); and those new numbers by id."""
    new: dict[int, tuple[int, ...]] = {}
    for batch in batches:
        if _all_known(batch.stacks.ids, known):
            continue
        for sid, frames in zip(batch.stacks.ids, batch.stacks.frame_ids, strict=True):
            if sid not in known:
                new.setdefault(sid, frames)
    numbers = ({sid: sid for sid in new} if next_no is None
               else {sid: next_no + n for n, sid in enumerate(new)})
    table = pa.table(
        {"stack_id": list(new), "frame_ids": [list(f) for f in new.values()],
         "stack_no": list(numbers.values())},
        schema=schema or arrow_schema("stacks"),
    )
    return table, numbers


def frames_table(batches: Sequence[DecodedBatch], known: Collection[int],
                 known_stacks: Collection[int] = frozenset()) -> pa.Table:
    """Frames of the batches whose id is not in `known`, each id once. A batch whose
    stacks are all in `known_stacks` is skipped unread: a stored stack's frames were
    stored with it (the decoder makes a batch's frames only when they are read)."""
    new: dict[int, tuple[str, str, int]] = {}
    for batch in batches:
        if batch.stacks.ids and _all_known(batch.stacks.ids, known_stacks):
            continue
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


SourceKey = tuple[str, ...]


def source_key(source: Source) -> SourceKey:
    """The strings sources.source_no stands for (schema.SOURCE_KEY), in that order."""
    return tuple(source.labels_json() if name == "labels" else getattr(source, name)
                 for name in SOURCE_KEY)


def sources_table(batches: Sequence[DecodedBatch], known: Mapping[SourceKey, int], next_no: int
                  ) -> tuple[pa.Table, dict[SourceKey, int]]:
    """The batches' sources not in `known` (key -> number), each once, numbered from
    `next_no` on; and those new numbers by key."""
    new = dict.fromkeys(k for b in batches if (k := source_key(b.source)) not in known)
    numbers = {key: next_no + n for n, key in enumerate(new)}
    columns: dict[str, list[Any]] = {"source_no": list(numbers.values())}
    columns |= {name: [key[i] for key in numbers] for i, name in enumerate(SOURCE_KEY)}
    return pa.table(columns, schema=arrow_schema("sources", FILE_TABLES)), numbers


# One column of a telemetry table: a field of the records (`_Field`), the batch's identity
# repeated on each of its records (`_Same`), or computed for one batch's records of its
# kind at once from the records as Columns, the batch's source, its seq and the source's
# number. Fields and the identity are gathered a column at a time over the whole group;
# only the computed ones are called per batch (one Python call per batch and column was
# most of building these tables).
_Computed = Callable[[Columns[Any], Source, int, int], list[Any]]
_IDENTITY = ("service", "instance", "host", "agent_id", "version", "seq", "source_no")


class _Field(NamedTuple):
    name: str


class _Same(NamedTuple):
    value: Callable[[Source, int, int], Any]  # of the batch's source, seq and source number


_Column = _Field | _Same | _Computed


def _same(name: str) -> _Same:
    # the batch's identity, repeated on every record of the batch
    if name == "seq":
        return _Same(lambda source, seq, no: seq)
    if name == "source_no":
        return _Same(lambda source, seq, no: no)
    if name not in _IDENTITY:
        raise KeyError(f"no value for telemetry column {name!r}")
    get = attrgetter(name)
    return _Same(lambda source, seq, no: get(source))


def _event_version(records: Columns[Event], source: Source, seq: int, no: int) -> list[Any]:
    # an event without a version happened under the batch's version
    return [version or source.version for version in records.column("version")]


def _event_attrs(records: Columns[Event], source: Source, seq: int, no: int) -> list[str]:
    return [attrs_json(attrs) for attrs in records.column("attrs")]


def _chunk_counts(rows: Columns[RequestRecord], source: Source, seq: int, no: int
                  ) -> list[int | None]:
    # chunks of a streamed response (gaps listed and dropped, plus one); None otherwise
    return [len(gaps) + dropped + 1 if ttfb is not None or gaps or dropped else None
            for ttfb, gaps, dropped in zip(rows.column("ttfb_ns"), rows.column("chunk_gaps_us"),
                                           rows.column("chunk_gaps_dropped"), strict=True)]


def _gap_max(rows: Columns[RequestRecord], source: Source, seq: int, no: int) -> list[int | None]:
    return [max(gaps) if gaps else None for gaps in rows.column("chunk_gaps_us")]


def _gap_lists(rows: Columns[RequestRecord], source: Source, seq: int, no: int) -> list[list[int]]:
    return [list(gaps) for gaps in rows.column("chunk_gaps_us")]


def attrs_json(attrs: Sequence[tuple[str, str]]) -> str:
    """Event attributes as stored: a JSON object with sorted keys."""
    return json.dumps(dict(attrs), sort_keys=True, separators=(",", ":"))


def _record_columns(record_type: type[Any], renamed: Mapping[str, str] | None = None
                    ) -> dict[str, _Column]:
    renamed = renamed or {}
    return {renamed.get(f.name, f.name): _Field(f.name) for f in fields(record_type)}


_RECORD_COLUMNS: dict[str, dict[str, _Column]] = {
    "gpu": _record_columns(GpuReading, {"index": "gpu_index"}),
    "process": _record_columns(ProcessReading),
    "host": _record_columns(HostReading),
    "requests": _record_columns(RequestRecord, {"end_ns": "time_ns"}) | {
        "chunk_count": _chunk_counts, "chunk_gap_max_us": _gap_max, "chunk_gaps_us": _gap_lists,
    },
    "events": _record_columns(Event) | {"attrs": _event_attrs, "version": _event_version},
    "agent_stats": _record_columns(AgentStats),
    "engine": _record_columns(EngineReading),
}
# each kind's records and their type: taken as Columns (the decoder's already are, a
# hand-made batch's tuples are turned into them once per batch)
_RECORDS_OF: dict[str, tuple[type[Any], Callable[[Telemetry], Sequence[Any]]]] = {
    "gpu": (GpuReading, lambda t: t.gpu),
    "process": (ProcessReading, lambda t: t.process),
    "host": (HostReading, lambda t: t.host),
    "requests": (RequestRecord, lambda t: t.requests),
    "events": (Event, lambda t: t.events),
    "agent_stats": (AgentStats, lambda t: t.agent_stats),
    "engine": (EngineReading, lambda t: t.engine),
}


_Part = tuple[Columns[Any], Source, int, int]  # records, source, seq, source number
_Plan = tuple[list[_Column], pa.Schema]
_PLANS: dict[tuple[str, tuple[Column, ...]], _Plan] = {}  # by table and columns on disk


def _plan(table: str, columns: tuple[Column, ...]) -> _Plan:
    # every column of the table on disk, in its order: the record's own, else the batch's
    key = (table, columns)
    if key not in _PLANS:
        own = _RECORD_COLUMNS[table]
        names = [c.reads_as or c.name for c in columns]
        _PLANS[key] = ([own[n] if n in own else _same(n) for n in names],
                       pa.schema([pa.field(c.name, c.arrow, c.nullable) for c in columns]))
    return _PLANS[key]


def kept(values: pa.Array, column: Column) -> pa.Array:
    """A column's values at the resolution kept (schema.RESOLUTION): whole units where
    the column holds units on disk, else nanoseconds rounded down to a whole unit."""
    if column.unit == 1:
        return values
    unit = _scalar(column.unit, values.type)
    units = pc.divide(values, unit)  # integer division; times and spans are >= 0
    return units if column.reads_as else pc.multiply(units, unit)


@cache
def _scalar(value: int, type_: pa.DataType) -> pa.Scalar:
    # a typed scalar, not a Python int: pyarrow converts an int argument of a compute
    # function afresh on every call, and that conversion tries to import dateutil, a
    # failed import (a search of sys.path) each time where it is not installed; with
    # the scalar, a column's divide was about 4 us rather than 35 (pyarrow 26)
    return pa.scalar(value, type_)


def _table(table: str, tables: Layout, parts: Sequence[_Part]) -> pa.Table:
    on_disk = tables[stored_name(table, tables)]
    plan, schema = _plan(table, on_disk)
    records = [part[0] for part in parts]
    lengths = [len(r) for r in records]
    arrays = []
    for column, f, c in zip(plan, schema, on_disk, strict=True):
        values: list[Any]
        if isinstance(column, _Field):
            values = list(chain.from_iterable(r.column(column.name) for r in records))
        elif isinstance(column, _Same):
            values = []
            for (_, source, seq, no), n in zip(parts, lengths, strict=True):
                values += [column.value(source, seq, no)] * n
        else:
            values = list(chain.from_iterable(column(*part) for part in parts))
        arrays.append(kept(pa.array(values, f.type), c))
    return pa.Table.from_arrays(arrays, schema=schema)


def telemetry_tables(batches: Sequence[DecodedBatch], tables: Layout,
                     source_nos: Mapping[SourceKey, int]) -> dict[str, pa.Table]:
    """One Arrow table per telemetry table that has rows in `batches`, keyed by the name
    reads use, in the layout `tables` (schema.stored_name); where that layout numbers
    sources, each source by its number (`source_nos`). Empty ones left out."""
    # each batch's source number, looked up once for all its tables
    nos = ([source_nos[source_key(b.source)] for b in batches] if numbers_sources(tables)
           else [0] * len(batches))
    out: dict[str, pa.Table] = {}
    for table, (record_type, records_of) in _RECORDS_OF.items():
        by_no = table in SOURCED_TABLES
        parts = [(Columns.of(record_type, records), batch.source, batch.seq, no if by_no else 0)
                 for batch, no in zip(batches, nos, strict=True)
                 if (records := records_of(batch.telemetry))]
        if parts:
            out[table] = _table(table, tables, parts)
    return out


def api_event_table(service: str, event: Event) -> pa.Table:
    """One event posted to the HTTP API: agent_id "api", no instance or host, seq 0."""
    source = Source(agent_id=API_AGENT_ID, service=service, version=event.version)
    return _table("events", TABLES, [(Columns.of(Event, (event,)), source, 0, 0)])
