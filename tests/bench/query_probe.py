"""What is behind the HTTP timings of queries.py, read from the database with the collector
stopped: how much data each window holds, where a query's time goes inside DuckDB and
inside the collector's own code, and what every table takes on disk.

DuckDB lets one process at a time open a file for writing, so all of this runs before
the first or after the last collector; none of it is what the HTTP timings measured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.analysis import gather
from pyrometer.collector.analysis.detect import DetectConfig
from pyrometer.collector.analysis.gather import SpikeQuery, analyze
from pyrometer.collector.query.tree import build_tree, count_tree
from pyrometer.collector.render.json_tree import render_json
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.duckdb.profiles import (
    ProfileFilter,
    StackCache,
    _read_stacks,
    read_profile,
)
from pyrometer.collector.storage.duckdb.rollups import watermarks
from pyrometer.collector.storage.duckdb.schema import FILE_TABLES, TABLES, stored_name

SECOND = 1_000_000_000


def window_data(con: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                end_ns: Nanos) -> dict[str, int]:
    """Sample rows and samples a flame graph of [start, end) merges (the API's own filter)."""
    clause, params = ProfileFilter(service, start_ns, end_ns).where()
    rows, samples = con.execute(f"SELECT count(*), coalesce(sum(count), 0)::BIGINT FROM samples "
                                f"WHERE {clause}", params).fetchone() or (0, 0)
    return {"rows": int(rows), "samples": int(samples)}


def requests_in(con: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos, end_ns: Nanos) -> int:
    (n,) = con.execute("SELECT count(*) FROM requests WHERE service = $s AND time_ns >= $a "
                       "AND time_ns < $b", {"s": service, "a": start_ns, "b": end_ns}).fetchone() or (0,)
    return int(n)


def _operators(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("children", []):
        yield from _operators(child)


def sql_profile(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any],
                out: Path) -> dict[str, Any]:
    """Run `sql` under DuckDB's profiler (EXPLAIN ANALYZE's figures, as JSON) and keep the
    total, the rows and row groups it scanned, and its three costliest operators."""
    con.execute("PRAGMA enable_profiling = 'json'")
    con.execute(f"PRAGMA profiling_output = '{out}'")
    try:
        con.execute(sql, params).fetchall()
    finally:
        con.execute("PRAGMA disable_profiling")
    doc = json.loads(out.read_text())
    ops = [op for top in doc.get("operator", []) for op in _operators(top)]
    costly = sorted(ops, key=lambda op: -float(op.get("timing", 0.0)))[:3]
    query = doc.get("query", {})
    return {
        "total_s": float(query.get("total_time", float("nan"))),
        "rows_scanned": int(query.get("total_rows_scanned", 0)),
        "row_groups_scanned": int(query.get("total_row_groups_scanned", 0)),
        "row_groups_in_table": int(query.get("total_row_groups_to_scan", 0)),
        "operators": [{"name": op.get("name", "?"), "s": float(op.get("timing", 0.0)),
                       "rows": int(op.get("intermediate_rows", 0))} for op in costly],
    }


def profile_sql(con: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos, end_ns: Nanos
                ) -> tuple[str, dict[str, Any]]:
    """The flame graph's main statement, as read_profile issues it: whole hours and
    minutes from the rollups, the rest from the raw rows."""
    where = ProfileFilter(service, start_ns, end_ns)
    parts, params = where.parts(where.plan(watermarks(con)))
    return ("SELECT stack_no, rate_hz, bool_or(idle_included), sum(count)::BIGINT "
            f"FROM ({parts}) GROUP BY stack_no, rate_hz", params)


def _best(func: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The shortest of `repeats` runs and the last result: the machine is shared."""
    best, result = float("inf"), None
    for _ in range(repeats):
        began = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - began)
    return best, result


def flamegraph_phases(con: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                      end_ns: Nanos, repeats: int = 2) -> dict[str, float]:
    """Seconds in each step of a JSON flame graph, in-process and without HTTP, each the
    best of `repeats`: read_profile, and within it the main aggregate and the stack and
    frame reads; the count tree (tree.count_tree), and the rest of the JSON text's render
    (render_json, which writes the text from the count tree it builds)."""
    sql, params = profile_sql(con, service, start_ns, end_ns)
    aggregate, rows = _best(lambda: con.execute(sql, params).fetchall(), repeats)
    ids = [row[0] for row in rows]
    stacks, _ = _best(lambda: _read_stacks(con, ids), repeats)
    where = ProfileFilter(service, start_ns, end_ns)
    # with the store's stack cache, as the collector reads: the best of the runs is warm
    cache = StackCache()
    read, profile = _best(lambda: read_profile(con, where, cache), repeats)
    tree, _ = _best(lambda: count_tree(profile), repeats)
    render, _ = _best(lambda: render_json(profile), repeats)
    return {"read_profile_s": read, "aggregate_s": aggregate, "stacks_s": stacks,
            "tree_s": tree, "encode_s": max(render - tree, 0.0),
            "stacks": len(profile.samples), "nodes": sum(1 for _ in build_tree(profile).walk())}


class _TimedStore:
    """A Store whose every method call is timed, by method: where analyze() spends."""

    def __init__(self, store: DuckDBStore) -> None:
        self._store = store
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._store, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began
                self.calls[name] = self.calls.get(name, 0) + 1
        return timed


def spike_phases(db: Path, service: str, start_ns: Nanos, end_ns: Nanos,
                 config: DetectConfig) -> dict[str, Any]:
    """analyze() in-process over a store that times each read: seconds per store method,
    and the rest (detection, cause scoring) as "analysis".

    Its reads one at a time (gather.READERS = 1), so that the parts add up to the whole;
    the collector runs a spike's reads READERS at a time, which is why the API's warm
    call can take less than this. A first call warms the store's stack cache, as the
    API's warm calls find it; the second is timed."""
    store = DuckDBStore(db)
    readers, gather.READERS = gather.READERS, 1
    try:
        query = SpikeQuery(service, start_ns, end_ns, config)
        analyze(store, query)
        timed = _TimedStore(store)
        began = time.perf_counter()
        analyze(timed, query)  # type: ignore[arg-type]
        total = time.perf_counter() - began
    finally:
        gather.READERS = readers
        store.close()
    reads = dict(sorted(timed.seconds.items(), key=lambda kv: -kv[1]))
    return {"total_s": total, "reads_s": reads, "calls": timed.calls, "readers": 1,
            "analysis_s": max(0.0, total - sum(reads.values()))}


# each table on disk by the name reads know it by (gpu for gpu_rows; sources its own)
_READ_NAMES = {name: name for name in FILE_TABLES} | {stored_name(t, FILE_TABLES): t for t in TABLES}


def _segments(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int, int, list[int]]]:
    rows = []
    for table in FILE_TABLES:
        rows += [(_READ_NAMES[table], column, block, offset, list(extra or []))
                 for column, block, offset, extra
                 in con.execute("SELECT column_name, block_id, block_offset, additional_block_ids "
                                "FROM pragma_storage_info($t) WHERE block_id >= 0",
                                {"t": table}).fetchall()]
    return rows


def storage(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, Any]:
    """File size and bytes per table and per samples column.

    DuckDB does not report a segment's size; a segment is taken to run from its offset
    to the next segment's offset in the same block (or the block's end), plus any
    further whole blocks it spans. The per-table figures so add up to the used blocks.
    """
    block = int((con.execute("SELECT block_size FROM pragma_database_size()").fetchone() or (0,))[0])
    used = int((con.execute("SELECT used_blocks FROM pragma_database_size()").fetchone() or (0,))[0])
    segments = sorted(_segments(con), key=lambda s: (s[2], s[3]))
    tables: dict[str, int] = {t: 0 for t in _READ_NAMES.values()}
    columns: dict[str, int] = {}
    for n, (table, column, blk, offset, extra) in enumerate(segments):
        nxt = segments[n + 1] if n + 1 < len(segments) else None
        end = nxt[3] if nxt is not None and nxt[2] == blk else block
        size = end - offset + block * len(extra)
        tables[table] += size
        if table == "samples":
            columns[column] = columns.get(column, 0) + size
    rows = {read: int((con.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,))[0])
            for table, read in _READ_NAMES.items()}
    methods = con.execute(
        "SELECT column_name, string_agg(DISTINCT compression, ', ' ORDER BY compression) "
        "FROM pragma_storage_info($t) WHERE segment_type <> 'VALIDITY' GROUP BY column_name",
        {"t": stored_name("samples", FILE_TABLES)}).fetchall()
    (samples,) = con.execute("SELECT coalesce(sum(count), 0)::BIGINT FROM samples").fetchone() or (0,)
    return {"file_bytes": path.stat().st_size, "used_bytes": used * block, "block_bytes": block,
            "samples": int(samples), "tables": tables, "rows": rows,
            "samples_columns": dict(sorted(columns.items(), key=lambda kv: -kv[1])),
            "samples_compression": dict(methods)}


def samples_as_parquet(con: duckdb.DuckDBPyConnection, out: Path, since_ns: Nanos) -> dict[str, int]:
    """Bytes of the sample rows since `since_ns`, and of their stack_no column alone,
    written as Parquet (zstd), the file format of the DuckLake layout the design grows
    into; with the rows and samples they hold. A slice keeps the copy short."""
    where = f"WHERE end_ns > {int(since_ns)}"
    rows, samples = con.execute(f"SELECT count(*), sum(count)::BIGINT FROM samples {where}"
                                ).fetchone() or (0, 0)
    sizes = {"rows": int(rows), "samples": int(samples or 0)}
    for name, columns in (("table", "*"), ("stack_no", "stack_no")):
        target = out / f"samples-{name}.parquet"
        con.execute(f"COPY (SELECT {columns} FROM samples {where}) TO '{target}' "
                    "(FORMAT parquet, COMPRESSION zstd)")
        sizes[name] = target.stat().st_size
        target.unlink()
    return sizes
