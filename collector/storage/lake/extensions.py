"""DuckDB's ducklake, postgres_scanner and httpfs extensions, loaded from their wheels.

DuckDB loads only extensions built for its exact release, and a collector must never
fetch one at start-up (closed egress; an unpinned dependency), so they come from the
`duckdb-extension-*` wheels that `pyrometer[lake]` pins (docs/lake.md). Each wheel holds
`extensions/vVERSION/NAME.duckdb_extension` in its package folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

from pyrometer.collector.errors import StorageError

CATALOG = ("ducklake", "postgres_scanner")
S3 = ("httpfs",)


def literal(value: str) -> str:
    """`value` as an SQL string literal (for statements that take no parameters)."""
    return "'" + value.replace("'", "''") + "'"


def extension_file(name: str) -> Path | None:
    """The wheel's build of `name` for the running DuckDB, or None when there is none."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    return path if path.is_file() else None


def load(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    """LOAD each extension from its wheel, else from DuckDB's own extension folder (where
    an `INSTALL` on a machine with network access put it); never downloads."""
    for name in names:
        path = extension_file(name)
        try:
            if path is None:
                con.execute(f"LOAD {name}")
            else:
                con.execute(f"LOAD {literal(str(path))}")
        except duckdb.Error as exc:
            raise StorageError(
                f"the lake needs DuckDB's {name} extension built for DuckDB {duckdb.__version__}, "
                "and none is installed: install pyrometer[lake], which pins a DuckDB and the "
                f"extensions built for it (docs/lake.md); DuckDB said: {exc}") from exc
