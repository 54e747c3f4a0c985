"""The embedded backend: DuckDB, one writer, Arrow appends. The only code that imports duckdb."""
