"""Reads of the engine table: the serving engine's canonical series (agent --scrape)."""

from __future__ import annotations

import duckdb

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.storage.duckdb.where import time_window
from pyrometer.collector.storage.reads import EngineRow

MAX_ENGINE_ROWS = 200_000  # a day of 13 series of 16 models every 5 s is about 3.6 M: keep the latest


def read_engine_rows(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                     end_ns: Nanos) -> list[EngineRow]:
    """Engine readings of `service` in [start, end), by time (the latest kept past the cap)."""
    clause, params = time_window(service, start_ns, end_ns)
    rows = cur.execute(
        "SELECT * FROM (SELECT time_ns, instance, metric, value, count, interval_s, engine, model "
        f"FROM engine WHERE {clause} ORDER BY time_ns DESC LIMIT $limit) ORDER BY time_ns",
        {**params, "limit": MAX_ENGINE_ROWS},
    ).fetchall()
    return [EngineRow(*row) for row in rows]
