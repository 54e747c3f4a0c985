"""Decoded telemetry as Arrow tables: gpu, process, host, requests, events and
agent_stats.

Each record becomes one row: the batch's identity (service, instance, host, agent_id,
version, seq) and the record's own time and fields. Values the agent did not send stay
NULL, never zero, so an average over a step is an average of what was measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from pyrometer.agent.model import Event, RequestRecord, Telemetry
from pyrometer.collector.rows import DecodedBatch, Source
from pyrometer.collector.schema import TABLES, arrow_schema

API_AGENT_ID = "api"  # agent_id of events posted to the HTTP API rather than sent by an agent

Row = dict[str, Any]


def _fields(record: Any, renamed: Mapping[str, str] | None = None) -> Row:
    renamed = renamed or {}
    return {renamed.get(name, name): getattr(record, name) for name in record.__slots__}


def _request_row(r: RequestRecord) -> Row:
    gaps = len(r.chunk_gaps_us) + r.chunk_gaps_dropped
    streamed = r.ttfb_ns is not None or gaps > 0
    return {
        "time_ns": r.end_ns, "pid": r.pid, "route": r.route, "method": r.method,
        "status": r.status, "latency_ns": r.latency_ns, "request_bytes": r.request_bytes,
        "response_bytes": r.response_bytes, "ttfb_ns": r.ttfb_ns,
        "chunk_count": gaps + 1 if streamed else None,
        "chunk_gap_max_us": max(r.chunk_gaps_us) if r.chunk_gaps_us else None,
        "chunk_gaps_us": list(r.chunk_gaps_us), "chunk_gaps_dropped": r.chunk_gaps_dropped,
        "app_size": r.app_size, "source": r.source,
    }


def attrs_json(attrs: Sequence[tuple[str, str]]) -> str:
    """Event attributes as stored: a JSON object with sorted keys."""
    return json.dumps(dict(attrs), sort_keys=True, separators=(",", ":"))


def _event_row(e: Event) -> Row:
    row = {"time_ns": e.time_ns, "kind": e.kind, "previous_version": e.previous_version,
           "pid": e.pid, "previous_pid": e.previous_pid, "attrs": attrs_json(e.attrs)}
    if e.version:  # an event without one happened under the batch's version
        row["version"] = e.version
    return row


_KINDS: dict[str, tuple[Callable[[Telemetry], Sequence[Any]], Callable[[Any], Row]]] = {
    "gpu": (lambda t: t.gpu, lambda r: _fields(r, {"index": "gpu_index"})),
    "process": (lambda t: t.process, _fields),
    "host": (lambda t: t.host, _fields),
    "requests": (lambda t: t.requests, _request_row),
    "events": (lambda t: t.events, _event_row),
    "agent_stats": (lambda t: t.agent_stats, _fields),
}


def _identity(source: Source, seq: int) -> Row:
    return {"service": source.service, "instance": source.instance, "host": source.host,
            "agent_id": source.agent_id, "version": source.version, "seq": seq}


def _table(table: str, rows: Sequence[Row]) -> pa.Table:
    cols = {c.name: [row[c.name] for row in rows] for c in TABLES[table]}
    return pa.table(cols, schema=arrow_schema(table))


def telemetry_tables(batches: Sequence[DecodedBatch]) -> dict[str, pa.Table]:
    """One Arrow table per telemetry table that has rows in `batches`; empty ones left out."""
    out: dict[str, pa.Table] = {}
    for table, (records_of, to_row) in _KINDS.items():
        rows = [
            {**_identity(batch.source, batch.seq), **to_row(record)}
            for batch in batches
            for record in records_of(batch.telemetry)
        ]
        if rows:
            out[table] = _table(table, rows)
    return out


def api_event_table(service: str, event: Event) -> pa.Table:
    """One event posted to the HTTP API: agent_id "api", no instance or host, seq 0."""
    source = Source(agent_id=API_AGENT_ID, service=service, version=event.version)
    return _table("events", [{**_identity(source, 0), **_event_row(event)}])
