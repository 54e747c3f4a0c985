"""Bring a file written by an older layout up to schema.py's, once, when it is opened.

Stack numbers: files from before them hold each sample row's 64-bit stack hash. They
get numbers in the order their stacks were stored, and sample rows are rewritten with
the numbers, in their order (a sample whose stack was never stored gets 0, which names
no stack, so reads leave it out as before). Rollups written before then are dropped and
compaction writes them again from the raw rows.
"""

from __future__ import annotations

import duckdb

from pyrometer.collector.storage.duckdb.schema import SAMPLE_COLUMNS, STACK_COLUMNS, Column


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
             select: str) -> None:
    # a new table in the new layout, filled in the old one's order, in its place
    definition = ", ".join(f"{c.name} {c.sql} NOT NULL" for c in columns)
    con.execute(f"CREATE TABLE {table}_migrated ({definition})")
    con.execute(f"INSERT INTO {table}_migrated {select}")
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE {table}_migrated RENAME TO {table}")
