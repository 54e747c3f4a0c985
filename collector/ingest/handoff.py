"""A decoded batch as bytes: what a decode worker hands the collector's writer process.

Only what the writer needs crosses: the batch's source, seq, window and valid
telemetry as columns, its stacks as their content hashes, and the dropped records'
counts. The stacks' frames cross once per stream, the first time a batch of the stream
uses them (`new_stacks`, `new_frames`); the writer's side of the stream keeps them and
completes each batch from there, as the decoder did in-process (workers.py).

marshal, not pickle, for the common case: the batch as nested tuples of ints, floats,
strings and None loads in a third of the time pickle takes to rebuild the same
dataclasses (15 against 41 us for the bench's batch of 150 rows, 30 readings and 20
requests, 2 cores), and the load is the part paid on the writer's core, which is the one
that bounds ingest. marshal is CPython's own format for .pyc files: fast, and only for
the same interpreter version, which a worker started from the collector's own
interpreter always is. Anything it cannot hold (a record kind carried as objects: events,
agent stats, engine readings) goes as pickle inside it.
"""

from __future__ import annotations

import marshal
import pickle
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, NamedTuple

from pyrometer.agent.shared.model import GpuReading, HostReading, ProcessReading, RequestRecord, Telemetry
from pyrometer.collector.storage.batch import Columns, DecodedBatch, FrameRows, Source, StackRows, WindowRows

# the Telemetry fields the decoder gives as Columns, and their record types
_COLUMN_KINDS = (("gpu", GpuReading), ("process", ProcessReading), ("host", HostReading),
                 ("requests", RequestRecord))
_OBJECT_KINDS = ("events", "agent_stats", "engine")  # tuples of records: pickled, when any
# their fields in order: what crosses is their positional arguments
_SOURCE = tuple(f.name for f in fields(Source))
_WINDOW = tuple(f.name for f in fields(WindowRows))

NewStacks = Sequence[tuple[int, tuple[int, ...]]]  # (stack id, its frame ids, root first)
NewFrames = Sequence[tuple[int, str, str, int]]  # (frame id, name, file, line)


class Handoff(NamedTuple):
    """A decoded batch as it comes off the wire, before its stream completes it."""

    parts: tuple[Any, ...]  # see dump(): source, seq, stack ids, window, telemetry, rejected
    new_stacks: NewStacks
    new_frames: NewFrames

    def batch(self, complete: Callable[[tuple[int, ...]], tuple[FrameRows, StackRows]]
              ) -> DecodedBatch:
        """The DecodedBatch, its frames and stacks from `complete(stack ids)`."""
        source, seq, stack_ids, window, telemetry, rejected = self.parts
        frames, stacks = complete(stack_ids)
        return DecodedBatch(Source(*source), seq, frames, stacks,
                            None if window is None else WindowRows(*window),
                            _telemetry(telemetry), dict(rejected))


def dump(batch: DecodedBatch, new_stacks: NewStacks = (), new_frames: NewFrames = ()) -> bytes:
    """`batch` (its stacks as ids only) and the dictionary entries new to the other side."""
    source, window, telemetry = batch.source, batch.window, batch.telemetry
    parts = (
        tuple([getattr(source, name) for name in _SOURCE]), batch.seq, batch.stacks.ids,
        None if window is None else tuple([getattr(window, name) for name in _WINDOW]),
        (tuple([_columns(getattr(telemetry, kind), record_type) for kind, record_type in _COLUMN_KINDS])
         + tuple([pickle.dumps(records) if (records := getattr(telemetry, kind)) else None
                  for kind in _OBJECT_KINDS])),
        tuple(batch.rejected.items()),
    )
    return marshal.dumps((parts, tuple(new_stacks), tuple(new_frames)))


def load(data: bytes) -> Handoff:
    """What `dump` made; ValueError (or EOFError) when `data` is not that."""
    parts, new_stacks, new_frames = marshal.loads(data)
    return Handoff(parts, new_stacks, new_frames)


def _columns(records: Sequence[Any], record_type: type[Any]) -> tuple[tuple[Any, ...], ...]:
    return Columns.of(record_type, records).as_fields()


def _telemetry(parts: tuple[Any, ...]) -> Telemetry:
    n = len(_COLUMN_KINDS)
    kinds: dict[str, Any] = {kind: Columns.of_fields(record_type, columns)
                             for (kind, record_type), columns in zip(_COLUMN_KINDS, parts[:n], strict=True)}
    for kind, blob in zip(_OBJECT_KINDS, parts[n:], strict=True):
        kinds[kind] = () if blob is None else pickle.loads(blob)
    return Telemetry(**kinds)
