"""The storage schema: every table's columns, as SQL and as Arrow types, in one place.

Every table is append-only and time-ordered, with no PRIMARY KEY or UNIQUE constraint,
so the same schema can live in Parquet under a DuckLake catalog where several
collectors write at once. Only rollup_state is ever updated, and only compare-and-set;
agent_hwm is appended to, a row per agent a commit stores batches of, each agent's
highest row being its mark, and pruned to that row in the background.

Stack numbers: a DuckDB file has one writer, which numbers each stack it stores
(stacks.stack_no) and puts the number, not the 64-bit hash, in samples and rollups. A
backend with several writers (DuckLake) keeps the hash in its sample rows instead:
Parquet dictionary-encodes it, and numbers given by several writers would clash.

Telemetry tables (gpu, process, host, requests, events, agent_stats, engine) start with the same identity
columns: time_ns (the record's own time, agent clock; kept to the millisecond but for an
event's, see RESOLUTION), then service, instance, host,
agent_id, version (the batch's "version" label) and seq (the batch; 0 for an event
posted to the HTTP API, whose agent_id is "api"). In the embedded file, the five
strings of a reading's sender (and of a sample row's) are kept once in sources, by
number (see Sources below).
"""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa


class Column(NamedTuple):
    name: str
    sql: str
    arrow: pa.DataType
    nullable: bool = False  # NULL means "the agent did not say", never zero
    # the type on disk where it is narrower than what reads see (`sql`); see STORED_AS
    stored: str = ""
    # nanoseconds per unit kept (1: every nanosecond); see RESOLUTION
    unit: int = 1
    # on disk, where the column holds whole units under its own name (`time_ms`): the
    # name reads see (`time_ns`); see RESOLUTION
    reads_as: str = ""


def _cols(*spec: tuple[str, str, pa.DataType] | tuple[str, str, pa.DataType, bool]
          ) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


def _decimals(columns: tuple[Column, ...], **places: int) -> tuple[Column, ...]:
    # readings kept on disk at a fixed number of decimal places (see STORED_AS below)
    return tuple(c._replace(stored=f"DECIMAL(18,{places[c.name]})") if c.name in places else c
                 for c in columns)


_BIGINT, _INT, _TEXT, _DOUBLE, _BOOL = pa.int64(), pa.int32(), pa.string(), pa.float64(), pa.bool_()

SAMPLE_COLUMNS = _cols(
    ("start_ns", "BIGINT", _BIGINT),  # window start, agent clock, ns since epoch
    ("end_ns", "BIGINT", _BIGINT),
    ("service", "VARCHAR", _TEXT),
    ("instance", "VARCHAR", _TEXT),
    ("host", "VARCHAR", _TEXT),
    ("agent_id", "VARCHAR", _TEXT),
    ("seq", "BIGINT", _BIGINT),
    ("version", "VARCHAR", _TEXT),  # labels["version"], "" when none
    ("labels", "VARCHAR", _TEXT),  # the other labels, a JSON object
    ("pid", "INTEGER", _INT),  # sampled process (the target's pid for its own rows)
    ("thread", "VARCHAR", _TEXT),
    ("stack_no", "INTEGER", _INT),  # stacks.stack_no of the row's stack
    ("count", "BIGINT", _BIGINT),
    ("rate_hz", "DOUBLE", _DOUBLE),
    ("idle_included", "BOOLEAN", _BOOL),
)
STACK_COLUMNS = _cols(
    ("stack_id", "BIGINT", _BIGINT),  # a hash of the frames: the same in every file
    ("frame_ids", "BIGINT[]", pa.list_(_BIGINT)),  # root first
    # a small number for the stack, 1, 2, 3, ... in the order this file got them: what
    # sample rows hold, since a 64-bit hash is stored uncompressed (8 bytes a row) and
    # a small integer bit-packed (a byte or two)
    ("stack_no", "INTEGER", _INT),
)
FRAME_COLUMNS = _cols(
    ("frame_id", "BIGINT", _BIGINT),
    ("name", "VARCHAR", _TEXT),
    ("file", "VARCHAR", _TEXT),
    ("line", "INTEGER", _INT),
)
# Profile rollups (rollups.py): the sample rows of every whole minute or hour, summed per
# (service, version, thread, stack, rate, idle); a window belongs to the bucket its
# midpoint falls in, the rule the raw reads use, so a read over whole buckets gives
# exactly the raw answer. Appended in bucket order by compaction; late windows add rows.
ROLLUP_COLUMNS = _cols(
    ("bucket_ns", "BIGINT", _BIGINT),  # bucket start, agent clock, a multiple of its length
    ("service", "VARCHAR", _TEXT),
    ("version", "VARCHAR", _TEXT),
    ("thread", "VARCHAR", _TEXT),
    ("stack_no", "INTEGER", _INT),
    ("rate_hz", "DOUBLE", _DOUBLE),
    ("idle_included", "BOOLEAN", _BOOL),
    ("count", "BIGINT", _BIGINT),
)
# Latency sketches (sketch.py, rollups.py): per 10 s of request end time, per service and
# route, how many requests fell in each log-spaced latency bin; merged by summing counts,
# they give any percentile of any longer step within 1%. Appended in bucket order by
# compaction; late requests add rows.
LATENCY_ROLLUP_COLUMNS = _cols(
    ("bucket_ns", "BIGINT", _BIGINT),  # bucket start, agent clock, a multiple of 10 s
    ("service", "VARCHAR", _TEXT),
    ("route", "VARCHAR", _TEXT),
    ("bin", "INTEGER", _INT),  # sketch.bin_of(latency_ns)
    ("count", "BIGINT", _BIGINT),
)
ROLLUP_STATE_COLUMNS = _cols(
    ("resolution", "VARCHAR", _TEXT),  # "1m", "1h", "10s" (the latency sketches)
    # every sample row whose midpoint is before this (for "10s": every request that
    # ended before it) is in the rollup (compacted, or added by the commit that stored
    # it); advanced compare-and-set
    ("done_ns", "BIGINT", _BIGINT),
)
HWM_COLUMNS = _cols(
    ("agent_id", "VARCHAR", _TEXT),
    ("seq", "BIGINT", _BIGINT),  # highest batch seq stored for the agent
)
IDENTITY_COLUMNS = _cols(
    ("time_ns", "BIGINT", _BIGINT),  # kept to the millisecond, but for events (RESOLUTION)
    ("service", "VARCHAR", _TEXT),
    ("instance", "VARCHAR", _TEXT),
    ("host", "VARCHAR", _TEXT),
    ("agent_id", "VARCHAR", _TEXT),
    ("version", "VARCHAR", _TEXT),
    ("seq", "BIGINT", _BIGINT),
)
GPU_COLUMNS = IDENTITY_COLUMNS + _decimals(_cols(
    ("gpu_index", "INTEGER", _INT),
    ("uuid", "VARCHAR", _TEXT),
    ("name", "VARCHAR", _TEXT),
    ("replayed", "BOOLEAN", _BOOL),  # read from a recording, not from a GPU
    ("temperature_c", "DOUBLE", _DOUBLE, True),
    ("slowdown_temperature_c", "DOUBLE", _DOUBLE, True),
    ("memory_temperature_c", "DOUBLE", _DOUBLE, True),
    ("sm_clock_mhz", "BIGINT", _BIGINT, True),
    ("sm_clock_max_mhz", "BIGINT", _BIGINT, True),
    ("graphics_clock_mhz", "BIGINT", _BIGINT, True),
    ("memory_clock_mhz", "BIGINT", _BIGINT, True),
    ("memory_clock_max_mhz", "BIGINT", _BIGINT, True),
    ("clock_event_reasons", "BIGINT", _BIGINT, True),  # NVML bitmask, known bits only
    ("power_mw", "BIGINT", _BIGINT, True),
    ("power_limit_mw", "BIGINT", _BIGINT, True),
    ("memory_used_bytes", "BIGINT", _BIGINT, True),
    ("memory_total_bytes", "BIGINT", _BIGINT, True),
    ("utilization_gpu_pct", "INTEGER", _INT, True),
    ("utilization_memory_pct", "INTEGER", _INT, True),
    ("performance_state", "INTEGER", _INT, True),
    ("process_memory_bytes", "BIGINT", _BIGINT, True),
), temperature_c=2, slowdown_temperature_c=2, memory_temperature_c=2)
PROCESS_COLUMNS = IDENTITY_COLUMNS + _decimals(_cols(
    ("pid", "INTEGER", _INT),
    ("interval_s", "DOUBLE", _DOUBLE),
    ("cpu_user", "DOUBLE", _DOUBLE),  # cores over the interval
    ("cpu_system", "DOUBLE", _DOUBLE),
    ("rss_bytes", "BIGINT", _BIGINT),
    ("threads", "BIGINT", _BIGINT),
    ("ctx_switches_voluntary", "BIGINT", _BIGINT),  # in the interval
    ("ctx_switches_involuntary", "BIGINT", _BIGINT),
    # thread-seconds runnable but waiting for a CPU, per second; NULL from older agents
    ("run_queue_wait", "DOUBLE", _DOUBLE, True),
), cpu_user=4, cpu_system=4, run_queue_wait=4)
HOST_COLUMNS = IDENTITY_COLUMNS + _decimals(_cols(
    ("cpu_pct", "DOUBLE", _DOUBLE),
    ("cpu_count", "BIGINT", _BIGINT),
    ("memory_available_bytes", "BIGINT", _BIGINT),
    ("memory_total_bytes", "BIGINT", _BIGINT),
    ("load1", "DOUBLE", _DOUBLE),
    ("psi_cpu_some", "DOUBLE", _DOUBLE, True),  # PSI avg10, percent; NULL without PSI
    ("psi_memory_some", "DOUBLE", _DOUBLE, True),
    ("psi_memory_full", "DOUBLE", _DOUBLE, True),
    ("psi_io_some", "DOUBLE", _DOUBLE, True),
    ("psi_io_full", "DOUBLE", _DOUBLE, True),
), cpu_pct=2, load1=2, psi_cpu_some=2, psi_memory_some=2, psi_memory_full=2, psi_io_some=2,
    psi_io_full=2)
REQUEST_COLUMNS = IDENTITY_COLUMNS + _cols(  # time_ns is the request's end
    ("pid", "INTEGER", _INT),  # the worker that served it, 0 = unknown
    ("route", "VARCHAR", _TEXT),
    ("method", "VARCHAR", _TEXT),
    ("status", "INTEGER", _INT),
    ("latency_ns", "BIGINT", _BIGINT),
    ("request_bytes", "BIGINT", _BIGINT),
    ("response_bytes", "BIGINT", _BIGINT),
    ("ttfb_ns", "BIGINT", _BIGINT, True),  # streamed responses only
    # streamed responses: chunks = gaps + 1 (dropped gaps included); NULL when not streamed
    ("chunk_count", "BIGINT", _BIGINT, True),
    ("chunk_gap_max_us", "BIGINT", _BIGINT, True),  # of the gaps listed
    ("chunk_gaps_us", "BIGINT[]", pa.list_(_BIGINT)),  # as listed, up to the agent's cap
    ("chunk_gaps_dropped", "BIGINT", _BIGINT),
    ("app_size", "BIGINT", _BIGINT, True),  # app-supplied size of the work, e.g. tokens
    ("source", "VARCHAR", _TEXT),  # "middleware" or "proxy"
    ("trace_id", "VARCHAR", _TEXT, True),  # W3C trace id the request arrived with
)
EVENT_COLUMNS = IDENTITY_COLUMNS + _cols(  # version: the event's (new) version
    ("kind", "VARCHAR", _TEXT),  # deploy, restart, config, ...
    ("previous_version", "VARCHAR", _TEXT),
    ("pid", "INTEGER", _INT),
    ("previous_pid", "INTEGER", _INT),
    ("attrs", "VARCHAR", _TEXT),  # a JSON object of strings, sorted keys
)
# The agent's own footprint, about once a minute per agent; counters are cumulative
# since that agent started (a new agent_id starts them again at 0).
AGENT_STATS_COLUMNS = IDENTITY_COLUMNS + _decimals(_cols(
    ("cpu_cores", "DOUBLE", _DOUBLE),  # agent and its py-spy children, last interval
    ("rss_bytes", "BIGINT", _BIGINT),
    ("queued_batches", "BIGINT", _BIGINT),  # not yet acknowledged
    ("spooled_batches", "BIGINT", _BIGINT),  # of which on disk
    ("spool_bytes", "BIGINT", _BIGINT),
    ("dropped_batches", "BIGINT", _BIGINT),
    ("dropped_records", "BIGINT", _BIGINT),
    ("reconnects", "BIGINT", _BIGINT),
    ("pyspy_restarts", "BIGINT", _BIGINT),
), cpu_cores=4)
# The serving engine's series (agent --scrape), one row per canonical metric and model per
# scrape: value / count is a mean where count > 0 (ENGINE_METRICS in the shared model).
ENGINE_COLUMNS = IDENTITY_COLUMNS + _cols(
    ("metric", "VARCHAR", _TEXT),
    ("value", "DOUBLE", _DOUBLE),
    ("interval_s", "DOUBLE", _DOUBLE),
    ("count", "BIGINT", _BIGINT),
    ("engine", "VARCHAR", _TEXT),
    ("model", "VARCHAR", _TEXT),
)

# RESOLUTION: what a reading's or a request's times are kept to. A record's time (when a
# reading was taken, when a request ended) to the millisecond, as Prometheus keeps a
# sample's; a request's latency and time to first byte to the microsecond, as Jaeger and
# Zipkin keep a span's (its chunk gaps were microseconds already). Nothing reads them
# finer: the page's and the spike analysis's steps are seconds, spans of a request are
# compared in percent, and agents' clocks on different hosts agree to milliseconds at
# best. A time is kept whole units (rounded down) and reads back in nanoseconds, a
# multiple of its unit, from every backend alike (a lake's rows stored before keep their
# nanoseconds: docs/lake.md). In the file a column so kept holds the units under its own
# name (`time_ms`, `latency_us`): a nanosecond time of a fleet's interleaved batches
# spans 35 bits in a 2,048-row bit-packing group, a millisecond one 15, and DuckDB 2.0
# packs anything of 9-16 bits in about two bytes (measured); on the bench's fill the
# whole file took 0.15 bytes a sample less (BENCHMARKS.md, section 6). Events keep their time as
# posted: a hundred rows a day, nothing to gain; so a request that ended in a deploy's
# millisecond, after it, reads as before it. Sample windows keep theirs: one value a
# batch, run-length coded to nothing.
MS, US = 1_000_000, 1_000
_UNIT_SUFFIX = {MS: "_ms", US: "_us"}


def _kept(columns: tuple[Column, ...], **units: int) -> tuple[Column, ...]:
    return tuple(c._replace(unit=units[c.name]) if c.name in units else c for c in columns)


GPU_COLUMNS, PROCESS_COLUMNS, HOST_COLUMNS, AGENT_STATS_COLUMNS, ENGINE_COLUMNS = (
    _kept(columns, time_ns=MS) for columns in (
        GPU_COLUMNS, PROCESS_COLUMNS, HOST_COLUMNS, AGENT_STATS_COLUMNS, ENGINE_COLUMNS))
REQUEST_COLUMNS = _kept(REQUEST_COLUMNS, time_ns=MS, latency_ns=US, ttfb_ns=US)

TABLES: dict[str, tuple[Column, ...]] = {
    "samples": SAMPLE_COLUMNS,
    "stacks": STACK_COLUMNS,
    "frames": FRAME_COLUMNS,
    "agent_hwm": HWM_COLUMNS,
    "samples_1m": ROLLUP_COLUMNS,
    "samples_1h": ROLLUP_COLUMNS,
    "latency_10s": LATENCY_ROLLUP_COLUMNS,
    "rollup_state": ROLLUP_STATE_COLUMNS,
    "gpu": GPU_COLUMNS,
    "process": PROCESS_COLUMNS,
    "host": HOST_COLUMNS,
    "requests": REQUEST_COLUMNS,
    "events": EVENT_COLUMNS,
    "agent_stats": AGENT_STATS_COLUMNS,
    "engine": ENGINE_COLUMNS,
}
TELEMETRY_TABLES = ("gpu", "process", "host", "requests", "events", "agent_stats", "engine")
# every time-ordered table and the column that retention compares with its cutoff;
# stacks, frames and agent_hwm are dictionaries and dedupe state, not time series
TIME_COLUMNS: dict[str, str] = {"samples": "end_ns", **{t: "time_ns" for t in TELEMETRY_TABLES}}
# the rollups, deleted by their own (longer) retention
ROLLUP_TABLES = ("samples_1m", "samples_1h", "latency_10s")

# The lake's tables (lake/backend.py): the same, but a stack's number is its 64-bit id,
# since numbers given 1, 2, 3 by several writers would clash (see the module docstring)
HASHED_TABLES: dict[str, tuple[Column, ...]] = {
    table: tuple(c._replace(sql="BIGINT", arrow=_BIGINT) if c.name == "stack_no" else c
                 for c in columns)
    for table, columns in TABLES.items()
}

# Sources: the strings that name who sent a reading (service, instance, host, agent_id,
# version, and the batch's other labels as a JSON object) repeat on every row of samples
# and of a telemetry table, where DuckDB stores each dictionary-coded at about a byte a
# row. The file's one writer numbers each distinct six once (sources.source_no, 1, 2,
# 3, ...) and the rows hold the number, a bit-packed byte for all six. The tables above
# are what reads see: in the file samples and each telemetry table but events (a hundred
# rows a day, whose version is the event's own) is a view of its rows (`<table>_rows`)
# joined with sources, with the columns, order and types of the table (a telemetry
# table has no labels column: its rows name the source their batch came with).
#
# The lake keeps the plain layout (HASHED_TABLES: the strings on every row,
# readings as DOUBLE). Numbers given 1, 2, 3 by each collector would name two sources
# alike, and a hash of the six would need every read to collapse the sources rows that
# several collectors write; neither buys much there, since Parquet already stores a
# column of a few distinct strings as a dictionary and run-length coded indexes, a few
# bits a row, and the Parquet writer keeps doubles as they come (docs/lake.md has the
# measurement). So the file's layout is FILE_TABLES and the lake's HASHED_TABLES, and
# only a layout that holds "sources" gets numbered sources and views.
SOURCE_KEY = ("service", "instance", "host", "agent_id", "version", "labels")
SOURCE_COLUMNS = _cols(("source_no", "INTEGER", _INT), *((n, "VARCHAR", _TEXT) for n in SOURCE_KEY))
# samples too: its five strings were half its bytes on disk (3.2 of 6.4 bytes a row on
# the bench's fleet, measured by writing the same 20 M rows both ways); its labels, one
# JSON object a batch, were another 0.26 bytes a row until they joined the five (0.03
# bytes a sample of the bench's whole file)
SOURCED_TABLES = ("samples", "gpu", "process", "host", "requests", "agent_stats", "engine")

# STORED_AS: a reading kept at a fixed number of decimal places (`Column.stored`) is, in
# the file, a DECIMAL on disk, a bit-packed integer, and DOUBLE again in the view. The
# places are the readings' own or finer: PSI avg10 and load1 come from the kernel with
# two decimals, NVML gives whole degrees; CPU time ticks at 10 ms, so over the agent's
# one-second interval host CPU is known to 1/(100 * cores) of 100% (kept to 0.01%) and a
# process's cores to 0.01 (kept to 0.0001). A double with no more places than these
# reads back as the very same double; a DOUBLE of full precision took 7 bytes a row
# (ALP-RD).

Layout = dict[str, tuple[Column, ...]]


def disk_name(c: Column) -> str:
    """A column's name where the file keeps it in whole units (`time_ns` -> `time_ms`)."""
    return c.name if c.unit == 1 else c.name.removesuffix("_ns") + _UNIT_SUFFIX[c.unit]


def _on_disk(c: Column) -> Column:
    if c.unit == 1:
        return c._replace(sql=c.stored or c.sql)
    return c._replace(name=disk_name(c), sql=c.stored or c.sql, reads_as=c.name)


def _rows_columns(table: str) -> tuple[Column, ...]:
    columns = TABLES[table]
    if table not in SOURCED_TABLES:
        return columns
    key = set(SOURCE_KEY)
    rest = tuple(_on_disk(c) for c in columns if c.name not in key)
    return rest[:1] + SOURCE_COLUMNS[:1] + rest[1:]  # time_ms, source_no, seq, ...


def _rows_name(table: str) -> str:
    return f"{table}_rows" if table in SOURCED_TABLES else table


# every table of the embedded file on disk, by its name there
FILE_TABLES: Layout = {
    "sources": SOURCE_COLUMNS, **{_rows_name(t): _rows_columns(t) for t in TABLES}}


def numbers_sources(tables: Layout) -> bool:
    """Whether a layout keeps sources by number (the file's) or strings on every row."""
    return "sources" in tables


def stored_column(table: str, name: str, tables: Layout) -> Column:
    """The column of `table`'s rows in layout `tables` that holds what reads call `name`."""
    for c in tables[stored_name(table, tables)]:
        if (c.reads_as or c.name) == name:
            return c
    raise KeyError(f"{table} has no column {name!r}")


def stored_name(table: str, tables: Layout) -> str:
    """The table of layout `tables` that holds `table`'s rows (its own name, or
    `<table>_rows` where a view of the name joins sources)."""
    return _rows_name(table) if numbers_sources(tables) else table


def read_expr(c: Column, alias: str = "") -> str:
    """SQL for what reads see of a column on disk: whole units back in nanoseconds
    (RESOLUTION), anything else as it is."""
    return f"{alias}{c.name} * {c.unit}" if c.reads_as else f"{alias}{c.name}"


def _view(table: str) -> str:
    on_disk = {c.reads_as or c.name: c for c in FILE_TABLES[_rows_name(table)]}

    def expr(c: Column) -> str:
        if c.name in SOURCE_KEY:
            return f"s.{c.name}"
        disk = on_disk[c.name]
        if disk.reads_as:
            return f"{read_expr(disk, 'r.')} AS {c.name}"
        return f"CAST(r.{c.name} AS {c.sql}) AS {c.name}" if c.stored else f"r.{c.name}"
    return (f"CREATE OR REPLACE VIEW {table} AS SELECT "
            + ", ".join(expr(c) for c in TABLES[table])
            + f" FROM {_rows_name(table)} AS r JOIN sources AS s USING (source_no)")


def create_statements(tables: Layout) -> list[str]:
    """CREATE TABLE IF NOT EXISTS for every table of a layout (the schema's single source)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ("
        + ", ".join(f"{c.name} {c.sql}{'' if c.nullable else ' NOT NULL'}" for c in columns)
        + ")"
        for table, columns in tables.items()
    ]


def view_statements(tables: Layout) -> list[str]:
    """CREATE OR REPLACE VIEW for every table that reads see through a view in a layout;
    after `migrate_statements`, so a view names the columns its rows have."""
    return [_view(table) for table in SOURCED_TABLES] if numbers_sources(tables) else []


def migrate_statements(existing: dict[str, set[str]], tables: Layout) -> list[str]:
    """ALTER TABLE ... ADD COLUMN for the nullable columns a file made by an older version lacks.

    `existing` holds each table's column names as found in the file. Rows are appended by
    position, so a column is only ever added at the end of its table's list here, which is
    where ADD COLUMN puts it; older rows read NULL ("the agent did not say").
    """
    return [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {c.name} {c.sql}"
        for table, columns in tables.items() if table in existing
        for c in columns if c.nullable and c.name not in existing[table]
    ]


def arrow_schema(table: str, tables: Layout = TABLES) -> pa.Schema:
    """The Arrow schema of rows appended to `table`, a table of layout `tables`."""
    return pa.schema([pa.field(c.name, c.arrow, c.nullable) for c in tables[table]])
