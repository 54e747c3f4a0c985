"""`make bench`: what Pyrometer costs, measured side by side with the alternatives.

`run.py` runs every row and writes BENCHMARKS.md and BENCHMARKS.json at the repository
root. Each row is a module with the same shape (see `common.Row`): ``measure(size, work)``
returns JSON-ready figures, ``markdown(result)`` renders them as a section of
BENCHMARKS.md. Every row module also runs alone: ``python tests/bench/<row>.py
[--size tiny|full] [--json OUT]``. Size "tiny" is what the test suite runs so the
harness cannot rot; "full" is what `make bench` publishes. The lake backend's rows
(lake_ingest.py, lake_files.py) run with `run.py --lake` from .venv-lake (`make
bench-lake`) and write BENCHMARKS-lake.md and BENCHMARKS-lake.json instead.
"""
