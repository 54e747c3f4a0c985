"""The ingest benchmark's report: each table lists the levels it is about, once."""

from __future__ import annotations

from typing import Any

from bench import ingest_load, ingest_report
from bench.ingest_load import LEVELS


def _figures(level: ingest_load.Level) -> dict[str, Any]:
    result = {"latencies_ms": [5.0], "samples": 1000, "acked_samples_total": 1000, "errors": [],
              "batches": 1, "acked_total": 1, "sent_total": 1, "duplicates": 0, "setup_s": 0.1}
    driven = {"results": [result], "ready": [{"setup_s": 0.1, "first_batch_bytes": 1,
                                             "steady_batch_bytes": 1}],
              "profile": None, "observed": {"wall_s": 1.0, "collector_cpu_s": 0.1}}
    return ingest_load.figures(level, driven, 1000, 1.0, 0, 1)


def test_the_commit_wait_table_has_one_row_a_wait_at_every_size() -> None:
    # at size tiny the fleet's busy-request level has the fleet's size and the default
    # wait: it belongs to the request records' table, not to this one
    for size, levels in LEVELS.items():
        cells = [line.split("|")[1].strip() for line in ingest_report._waits(
            [_figures(level) for level in levels]) if line.startswith("| ")]
        rows = [cell for cell in cells if cell[:1].isdigit()]  # not the header
        assert rows and len(rows) == len(set(rows)), (size, rows)
        assert sum("(default)" in row for row in rows) == 1, (size, rows)
