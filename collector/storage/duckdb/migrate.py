"""Bring a file written by an older layout up to schema.py's, once, when it is opened.

Stack numbers: files from before them hold each sample row's 64-bit stack hash. They
get numbers in the order their stacks were stored, and sample rows are rewritten with
the numbers, in their order (a sample whose stack was never stored gets 0, which names
no stack, so reads leave it out as before). Rollups written before then are dropped and
compaction writes them again from the raw rows.

Sources: files from before them hold the five source strings on every telemetry row,
and files from before samples were numbered too (the telemetry was first) on every
sample row. Each distinct five gets a number, in the order the tables first hold it
(after the numbers a file already has), and each table's rows move, in their order, to
`<table>_rows` with the number (and readings at the places schema.py keeps); the old
table goes, and the view of the same name takes its place.

Labels: files from before them hold a sample row's other labels (a JSON object) on
every row, and sources the five strings alone. Each source gets the label set its sample
rows first held, keeping its number; each other label set it was sent with, the next
number; a source no sample row names, none (`{}`). Sample rows are rewritten, in their
order, with the number of their six and without the labels.

Resolution: files from before it hold every reading's and request's time, and a
request's latency and time to first byte, in nanoseconds. Each `<table>_rows` that does
is rewritten, in its order, with them in whole milliseconds or microseconds
(schema.RESOLUTION) under the names that say so.
"""

from __future__ import annotations

import duckdb

from pyrometer.collector.storage.duckdb.schema import (
    FILE_TABLES,
    SAMPLE_COLUMNS,
    SOURCE_COLUMNS,
    SOURCE_KEY,
    SOURCED_TABLES,
    STACK_COLUMNS,
    Column,
    stored_name,
)


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = $t ORDER BY column_index",
        {"t": table}).fetchall()]


def needs_stack_numbers(con: duckdb.DuckDBPyConnection) -> bool:
    return "stack_no" not in _columns(con, "stacks")


def add_stack_numbers(con: duckdb.DuckDBPyConnection) -> None:
    """The migration above, in the caller's transaction; run before CREATE TABLE IF NOT
    EXISTS, so the rollups are created again in the new layout afterwards."""
    con.execute("DROP TABLE IF EXISTS samples_1m")
    con.execute("DROP TABLE IF EXISTS samples_1h")
    con.execute("DROP TABLE IF EXISTS rollup_state")
    con.execute("DROP TABLE IF EXISTS latency_10s")  # its watermark goes with rollup_state
    _rewrite(con, "stacks", STACK_COLUMNS,
             "SELECT s.stack_id, s.frame_ids, m.n FROM stacks AS s JOIN (SELECT stack_id, "
             "row_number() OVER (ORDER BY min(rowid)) AS n FROM stacks GROUP BY stack_id) AS m "
             "ON s.stack_id = m.stack_id ORDER BY s.rowid")
    columns = ", ".join(
        "coalesce(m.stack_no, 0)" if c.name == "stack_no" else f"s.{c.name}"
        for c in SAMPLE_COLUMNS)
    _rewrite(con, "samples", SAMPLE_COLUMNS,
             f"SELECT {columns} FROM samples AS s LEFT JOIN (SELECT stack_id, min(stack_no) "
             "AS stack_no FROM stacks GROUP BY stack_id) AS m ON s.stack_id = m.stack_id "
             "ORDER BY s.rowid")


def _rewrite(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[Column, ...],
             select: str, into: str | None = None) -> None:
    # a new table in the new layout, filled in the old one's order, in its place (or
    # under the name `into`)
    definition = ", ".join(
        f"{c.name} {c.sql}{'' if c.nullable else ' NOT NULL'}" for c in columns)
    con.execute(f"CREATE TABLE {table}_migrated ({definition})")
    con.execute(f"INSERT INTO {table}_migrated {select}")
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE {table}_migrated RENAME TO {into or table}")


def _base_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main'").fetchall()}


def needs_sources(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(_base_tables(con) & set(SOURCED_TABLES))


def add_sources(con: duckdb.DuckDBPyConnection) -> None:
    """The sources migration above, in the caller's transaction; run before CREATE TABLE
    IF NOT EXISTS, which then creates the views."""
    tables = _base_tables(con)
    old = [t for t in SOURCED_TABLES if t in tables]
    key = ", ".join(SOURCE_KEY)
    keys = {table: _key_of(con, table) for table in old}
    firsts = " UNION ALL ".join(
        "SELECT " + ", ".join(f"{e} AS {name}" for name, e in zip(SOURCE_KEY, keys[table], strict=True))
        + f", {n} AS t, min(rowid) AS r FROM {table} GROUP BY ALL" for n, table in enumerate(old))
    if "sources" not in tables:
        definition = ", ".join(f"{c.name} {c.sql} NOT NULL" for c in SOURCE_COLUMNS)
        con.execute(f"CREATE TABLE sources ({definition})")
    # a file whose telemetry has sources already (samples came later): the sources only
    # its samples name get the next numbers
    con.execute(f"INSERT INTO sources SELECT (SELECT coalesce(max(source_no), 0) FROM sources) "
                f"+ row_number() OVER (ORDER BY t, r), {key} FROM (SELECT {key}, min(t) AS t, "
                f"min(r) AS r FROM ({firsts}) GROUP BY ALL) AS f ANTI JOIN sources USING ({key})")
    for table in old:
        rows = stored_name(table, FILE_TABLES)
        columns = ", ".join("s.source_no" if c.name == "source_no" else expr
                            for c, expr in _from_old(con, table, FILE_TABLES[rows]))
        on = " AND ".join(f"s.{name} = {expr}" for name, expr in zip(
            SOURCE_KEY, _key_of(con, table, "o."), strict=True))
        _rewrite(con, table, FILE_TABLES[rows],
                 f"SELECT {columns} FROM {table} AS o JOIN sources AS s ON {on} "
                 "ORDER BY o.rowid", into=rows)


def _key_of(con: duckdb.DuckDBPyConnection, table: str, alias: str = "") -> list[str]:
    # an old table's source strings, one expression each: a telemetry table never held
    # labels (its batch's are not known; the rows name a source without any)
    present = set(_columns(con, table))
    return [f"{alias}{name}" if name in present else "'{}'" for name in SOURCE_KEY]


def needs_source_labels(con: duckdb.DuckDBPyConnection) -> bool:
    return "sources" in _base_tables(con) and "labels" not in _columns(con, "sources")


def add_source_labels(con: duckdb.DuckDBPyConnection) -> None:
    """The labels migration above, in the caller's transaction; before add_sources."""
    pairs: list[tuple[int, str]] = []
    if "samples_rows" in _base_tables(con):
        pairs = con.execute("SELECT source_no, labels FROM samples_rows GROUP BY ALL "
                            "ORDER BY min(rowid)").fetchall()
    (top,) = con.execute("SELECT coalesce(max(source_no), 0) FROM sources").fetchone() or (0,)
    numbers: dict[tuple[int, str], int] = {}
    named: set[int] = set()
    for no, labels in pairs:  # a source's first label set keeps its number
        if no in named:
            top += 1
            numbers[(no, labels)] = top
        else:
            named.add(no)
            numbers[(no, labels)] = no
    con.execute("CREATE TEMP TABLE _source_labels (old INTEGER, labels VARCHAR, new INTEGER)")
    if numbers:
        con.execute("INSERT INTO _source_labels SELECT unnest($old), unnest($labels), unnest($new)",
                    {"old": [k[0] for k in numbers], "labels": [k[1] for k in numbers],
                     "new": list(numbers.values())})
    five = ", ".join(f"s.{name}" for name in SOURCE_KEY if name != "labels")
    _rewrite(con, "sources", SOURCE_COLUMNS,
             f"SELECT coalesce(m.new, s.source_no), {five}, coalesce(m.labels, '{{}}') "
             "FROM sources AS s LEFT JOIN _source_labels AS m ON m.old = s.source_no "
             "ORDER BY 1")
    if pairs:
        columns = ", ".join("m.new" if c.name == "source_no" else f"o.{c.name}"
                            for c in FILE_TABLES["samples_rows"])
        _rewrite(con, "samples_rows", FILE_TABLES["samples_rows"],
                 f"SELECT {columns} FROM samples_rows AS o JOIN _source_labels AS m "
                 "ON m.old = o.source_no AND m.labels = o.labels ORDER BY o.rowid")
    con.execute("DROP TABLE _source_labels")


def _from_old(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[Column, ...]
              ) -> list[tuple[Column, str]]:
    # each column of the new layout from the old table `o`: as it was; in whole units
    # where it held nanoseconds (schema.RESOLUTION); else NULL, a column added since
    present = set(_columns(con, table))
    return [(c, f"o.{c.name}" if c.name in present
             else f"o.{c.reads_as} // {c.unit}" if c.reads_as in present else "NULL")
            for c in columns]


def _in_nanoseconds(con: duckdb.DuckDBPyConnection) -> list[str]:
    # the rows tables that hold a column under its nanosecond name
    tables = _base_tables(con)
    out = []
    for rows, columns in FILE_TABLES.items():
        present = set(_columns(con, rows)) if rows in tables else set()
        if any(c.reads_as in present for c in columns if c.reads_as):
            out.append(rows)
    return out


def needs_units(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(_in_nanoseconds(con))


def to_units(con: duckdb.DuckDBPyConnection) -> None:
    """The resolution migration above, in the caller's transaction; before CREATE TABLE
    IF NOT EXISTS, and the views made again after it."""
    for rows in _in_nanoseconds(con):
        columns = ", ".join(expr for _, expr in _from_old(con, rows, FILE_TABLES[rows]))
        _rewrite(con, rows, FILE_TABLES[rows], f"SELECT {columns} FROM {rows} AS o ORDER BY o.rowid")
