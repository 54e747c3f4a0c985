"""Test helper: encodes domain-model windows into ingest Batches the way an agent does.

Strings, frames and stacks are sent once per stream (a `StreamEncoder` is one stream),
each delta carrying the *_base ids the collector checks. Also turns a DecodedBatch back
into domain values so tests can compare what went in with what came out.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyrometer.agent.model import NANOS_PER_SECOND, Frame, SampleKey, Stack
from pyrometer.collector.rows import DecodedBatch
from pyrometer.proto import ingest_pb2

BASE_NS = 1_750_000_000 * NANOS_PER_SECOND  # a fixed instant in 2025
NOW_NS = BASE_NS + 3600 * NANOS_PER_SECOND


def stack(*names: str, file: str = "app.py") -> Stack:
    """A stack of frames in one file, root first, lines numbered by depth."""
    return tuple(Frame(name, file, i + 1) for i, name in enumerate(names))


class StreamEncoder:
    """One agent stream: its dictionary tables and the identity it sends."""

    def __init__(
        self, agent_id: str = "agent-1", service: str = "svc", instance: str = "pod-1",
        host: str = "host-1", target_pid: int = 100, labels: Mapping[str, str] | None = None,
    ) -> None:
        self.identity = ingest_pb2.AgentIdentity(
            agent_id=agent_id, service=service, instance=instance, host=host,
            target_pid=target_pid, labels=dict(labels or {}), agent_version="0.1.0",
        )
        self.strings: dict[str, int] = {}
        self.frames: dict[Frame, int] = {}
        self.stacks: dict[Stack, int] = {}

    def _string(self, text: str, delta: ingest_pb2.DictionaryDelta) -> int:
        if text not in self.strings:
            if not delta.strings:
                delta.string_base = len(self.strings)
            self.strings[text] = len(self.strings)
            delta.strings.append(text)
        return self.strings[text]

    def _frame(self, frame: Frame, delta: ingest_pb2.DictionaryDelta) -> int:
        if frame not in self.frames:
            name, file = self._string(frame.name, delta), self._string(frame.file, delta)
            if not delta.frames:
                delta.frame_base = len(self.frames)
            self.frames[frame] = len(self.frames)
            delta.frames.add(name=name, file=file, line=frame.line)
        return self.frames[frame]

    def _stack(self, frames: Stack, delta: ingest_pb2.DictionaryDelta) -> int:
        if frames not in self.stacks:
            ids = [self._frame(f, delta) for f in frames]
            if not delta.stacks:
                delta.stack_base = len(self.stacks)
            self.stacks[frames] = len(self.stacks)
            delta.stacks.add(frames=ids)
        return self.stacks[frames]

    def batch(
        self, seq: int, counts: Mapping[SampleKey, int] | None = None, *,
        start_ns: int = BASE_NS, end_ns: int | None = None, rate_hz: float = 100.0,
        idle_included: bool = False,
    ) -> ingest_pb2.Batch:
        """A batch with one window of `counts` (no window when counts is None)."""
        out = ingest_pb2.Batch(seq=seq)
        out.agent.CopyFrom(self.identity)
        if counts is None:
            return out
        window = out.profile
        window.start_unix_nanos = start_ns
        window.end_unix_nanos = end_ns if end_ns is not None else start_ns + 10 * NANOS_PER_SECOND
        window.rate_hz = rate_hz
        window.idle_included = idle_included
        for key, count in counts.items():
            window.stack_ids.append(self._stack(key.stack, out.dictionary))
            window.counts.append(count)
            window.thread_ids.append(self._string(key.thread, out.dictionary))
            window.pids.append(key.pid)
        return out


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
