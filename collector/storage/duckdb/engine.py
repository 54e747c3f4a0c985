"""Reads of the engine table: the serving engine's canonical series (agent --scrape)."""

from __future__ import annotations

import duckdb

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.storage.duckdb.where import step_of, time_window
from pyrometer.collector.storage.reads import EngineRow, EngineStep

MAX_ENGINE_ROWS = 200_000  # a day of 13 series of 16 models every 5 s is about 3.6 M: keep the latest


def read_engine_rows(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                     end_ns: Nanos) -> list[EngineRow]:
    """Engine readings of `service` in [start, end), by time (the latest kept past the cap)."""
    clause, params = time_window(service, start_ns, end_ns)
    rows = cur.execute(
        "SELECT * FROM (SELECT time_ns, instance, metric, value, count, interval_s, engine, model "
        f"FROM engine WHERE {clause} ORDER BY ALL DESC LIMIT $limit) ORDER BY ALL",
        {**params, "limit": MAX_ENGINE_ROWS},
    ).fetchall()
    return [EngineRow(*row) for row in rows]


def read_engine_steps(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                      end_ns: Nanos, origin_ns: Nanos, step_ns: Nanos,
                      instance: str | None = None) -> list[EngineStep]:
    """Engine readings of `service` in [start, end) summed per step of the grid from
    `origin_ns` (see EngineStep), by step, metric and engine; a scrape is one instance's
    readings at one time."""
    clause, params = time_window(service, start_ns, end_ns, instance=instance)
    rows = cur.execute(
        "WITH scrapes AS (SELECT time_ns, metric, engine, sum(value) AS total, "
        "coalesce(sum(value) FILTER (WHERE count > 0), 0) AS counted, sum(count) AS n, "
        f"max(value) AS highest FROM engine WHERE {clause} "
        "GROUP BY time_ns, instance, metric, engine) "
        f"SELECT {step_of('time_ns')} AS i, metric, engine, sum(total), sum(counted), sum(n), "
        "count(*), sum(highest), max(highest) FROM scrapes GROUP BY i, metric, engine "
        "ORDER BY i, metric, engine",
        {**params, "s0": origin_ns, "step": step_ns}).fetchall()
    return [EngineStep(int(i), metric, engine, float(total), float(counted), int(n), int(scrapes),
                       float(scrape_highest), float(highest))
            for i, metric, engine, total, counted, n, scrapes, scrape_highest, highest in rows]

