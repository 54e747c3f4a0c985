"""Test helper: ingest Batches built with the agent's own encoder.

A `StreamEncoder` is one stream (its dictionary); `decoded_counts` turns a DecodedBatch
back into domain values so tests can compare what went in with what came out.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyrometer.agent.shared.model import (
    NANOS_PER_SECOND,
    Frame,
    ProfileWindow,
    SampleKey,
    Stack,
    Telemetry,
)
from pyrometer.agent.ship import encoder as agent_encoder
from pyrometer.agent.ship.encoder import AgentIdentity
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.proto import ingest_pb2

BASE_NS = 1_750_000_000 * NANOS_PER_SECOND  # a fixed instant in 2025
NOW_NS = BASE_NS + 3600 * NANOS_PER_SECOND


def stack(*names: str, file: str = "app.py") -> Stack:
    """A stack of frames in one file, root first, lines numbered by depth."""
    return tuple(Frame(name, file, i + 1) for i, name in enumerate(names))


class StreamEncoder:
    """One agent stream, encoded by the agent's own encoder (so the tests exercise it)."""

    def __init__(
        self, agent_id: str = "agent-1", service: str = "svc", instance: str = "pod-1",
        host: str = "host-1", target_pid: int = 100, labels: Mapping[str, str] | None = None,
    ) -> None:
        identity = AgentIdentity(
            agent_id=agent_id, service=service, instance=instance, host=host,
            target_pid=target_pid, labels=tuple(sorted((labels or {}).items())),
            agent_version="0.1.0",
        )
        self._encoder = agent_encoder.StreamEncoder(identity)

    def batch(
        self, seq: int, counts: Mapping[SampleKey, int] | None = None, *,
        start_ns: int = BASE_NS, end_ns: int | None = None, rate_hz: float = 100.0,
        idle_included: bool = False, telemetry: Telemetry | None = None,
        version: str | None = None,
    ) -> ingest_pb2.Batch:
        """A batch with one window of `counts` (no window when counts is None), and
        `telemetry`; `version` replaces the identity's version label for this batch."""
        if counts is None:
            return self._encoder.encode(seq, None, telemetry, version)
        window = ProfileWindow(
            start_ns=start_ns,
            end_ns=end_ns if end_ns is not None else start_ns + 10 * NANOS_PER_SECOND,
            rate_hz=rate_hz, counts=dict(counts), idle_included=idle_included,
        )
        return self._encoder.encode(seq, window, telemetry, version)

    @property
    def table_sizes(self) -> tuple[int, int, int]:
        """(strings, frames, stacks) sent on this stream so far."""
        return self._encoder.table_sizes


def decoded_counts(batch: DecodedBatch) -> dict[SampleKey, int]:
    """The window of a decoded batch as domain values, for comparison with the input."""
    frames = {
        fid: Frame(name, file, line)
        for fid, name, file, line in zip(
            batch.frames.ids, batch.frames.names, batch.frames.files, batch.frames.lines, strict=True)
    }
    stacks = {
        sid: tuple(frames[f] for f in fids)
        for sid, fids in zip(batch.stacks.ids, batch.stacks.frame_ids, strict=True)
    }
    out: dict[SampleKey, int] = {}
    w = batch.window
    assert w is not None
    for sid, thread, pid, count in zip(w.stack_ids, w.threads, w.pids, w.counts, strict=True):
        key = SampleKey(stacks[sid], thread, pid)
        out[key] = out.get(key, 0) + count
    return out
