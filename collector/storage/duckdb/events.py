"""Events (deploys, restarts, config changes) as stored and as read back.

Agents send events in their batches (a restart, or a deploy when the target's version
changed); CI/CD posts them to the HTTP API (`pyrometer event`). Both land in the same
append-only `events` table; an event from the API has agent_id "api" and seq 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import duckdb

from pyrometer.agent.shared.model import Nanos

MAX_EVENTS = 10_000  # one listing's rows; a longer one says it was truncated


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the events table."""

    time_ns: Nanos
    service: str
    instance: str
    host: str
    agent_id: str  # "api" for an event posted to the HTTP API
    version: str  # the event's (new) version, or the sender's version when it had none
    kind: str
    previous_version: str = ""
    pid: int = 0
    previous_pid: int = 0
    attrs: tuple[tuple[str, str], ...] = ()  # sorted by key


@dataclass(frozen=True, slots=True)
class EventListing:
    events: tuple[StoredEvent, ...]  # by time
    truncated: bool  # more than MAX_EVENTS matched; the earliest are returned


def read_events(
    cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos, end_ns: Nanos,
    kind: str | None = None,
) -> EventListing:
    """Events of `service` with time in [start, end), optionally of one kind, by time."""
    clause = "service = $service AND time_ns >= $start AND time_ns < $end"
    params: dict[str, object] = {"service": service, "start": start_ns, "end": end_ns,
                                 "limit": MAX_EVENTS + 1}
    if kind is not None:
        clause += " AND kind = $kind"
        params["kind"] = kind
    rows = cur.execute(
        "SELECT time_ns, service, instance, host, agent_id, version, kind, previous_version, "
        f"pid, previous_pid, attrs FROM events WHERE {clause} "
        "ORDER BY time_ns, agent_id, seq, kind LIMIT $limit",
        params,
    ).fetchall()
    events = tuple(replace(StoredEvent(*row[:10]), attrs=tuple(sorted(json.loads(row[10]).items())))
                   for row in rows)
    return EventListing(events[:MAX_EVENTS], len(events) > MAX_EVENTS)
