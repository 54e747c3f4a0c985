"""The ingest benchmark's loss check counts every record kind an acked batch carried."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import ingest_load, ingest_report
from bench.ingest_load import Level
from bench.ingest_workload import Batches
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.proto import ingest_pb2

LEVEL = Level(2, "paced", 0.5, 1.5, request_rate=20)


def _driven(acked_batches: int, samples: int) -> dict[str, Any]:
    result = {"latencies_ms": [5.0], "samples": samples, "acked_samples_total": samples,
              "errors": [], "batches": acked_batches, "acked_total": acked_batches,
              "sent_total": acked_batches, "duplicates": 0, "setup_s": 0.1}
    ready = {"setup_s": 0.1, "first_batch_bytes": 1, "steady_batch_bytes": 1}
    return {"results": [result], "ready": [ready], "profile": None,
            "observed": {"wall_s": 1.0, "collector_cpu_s": 0.1}}


def test_a_level_is_lossless_only_when_every_kind_of_record_was_stored() -> None:
    # 3 batches of 10 s: 200 requests (20 a second) and 10 readings of each kind apiece
    expected = {"requests": 600, "process": 30, "host": 30, "gpu": 30}
    assert ingest_load.acked_records(LEVEL, 3) == expected
    whole = ingest_load.figures(LEVEL, _driven(3, 3000), 3000, 1.0, 0, 1, expected)
    assert whole["lossless"] and whole["stored_records"] == expected
    short = ingest_load.figures(LEVEL, _driven(3, 3000), 3000, 1.0, 0, 1,
                                expected | {"requests": 599})
    assert not short["lossless"]
    assert ingest_report._shortfall(short) == "samples 3,000 of 3,000; requests 599 of 600"
    # a backend whose records are not counted (the lake) is judged on its samples
    assert ingest_load.figures(LEVEL, _driven(3, 3000), 3000, 1.0, 0, 1)["lossless"]


def test_stored_records_counts_what_the_workload_batches_carry(tmp_path: Path) -> None:
    # the bench's own batches, decoded and committed as the collector does: what the
    # file holds is what acked_records says the acked batches carried
    db = tmp_path / "c.duckdb"
    DuckDBStore(db).close()
    assert ingest_load.stored_records(db) == {"requests": 0, "process": 0, "host": 0, "gpu": 0}
    level = Level(1, "paced", 0.5, 1.5, request_rate=3)
    batches = Batches.build(time.time_ns() - 3600 * 10**9, request_rate=level.request_rate)
    decoder, store = StreamDecoder(), DuckDBStore(db)
    try:
        for seq in (1, 2):
            message = ingest_pb2.Batch.FromString(batches.encode(0, seq))
            store.commit([decoder.decode(message, time.time_ns())])
    finally:
        store.close()
    assert ingest_load.stored_records(db) == ingest_load.acked_records(level, 2)
