"""Events (deploys, restarts, config changes) read back from the events table.

Agents send events in their batches (a restart, or a deploy when the target's version
changed); CI/CD posts them to the HTTP API (`pyrometer event`). Both land in the same
append-only `events` table; an event from the API has agent_id "api" and seq 0.
"""

from __future__ import annotations

import json
from dataclasses import replace

import duckdb

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.storage.duckdb.where import time_window
from pyrometer.collector.storage.reads import EventListing, StoredEvent

MAX_EVENTS = 10_000  # one listing's rows; a longer one says it was truncated


def read_events(
    cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos, end_ns: Nanos,
    kind: str | None = None,
) -> EventListing:
    """Events of `service` with time in [start, end), optionally of one kind, by time."""
    clause, params = time_window(service, start_ns, end_ns, kind=kind)
    rows = cur.execute(
        "SELECT time_ns, service, instance, host, agent_id, version, kind, previous_version, "
        f"pid, previous_pid, attrs FROM events WHERE {clause} "
        "ORDER BY time_ns, agent_id, seq, kind LIMIT $limit",
        {**params, "limit": MAX_EVENTS + 1},
    ).fetchall()
    events = tuple(replace(StoredEvent(*row[:10]), attrs=tuple(sorted(json.loads(row[10]).items())))
                   for row in rows)
    return EventListing(events[:MAX_EVENTS], len(events) > MAX_EVENTS)
