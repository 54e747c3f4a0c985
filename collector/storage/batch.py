"""Values passed from ingest to storage: a decoded batch as columnar rows.

Kept apart from the decoder so that a store depends on these plain values only, never
on protobuf. Frame and stack ids here are content hashes (see decode.frame_id).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, overload

from pyrometer.agent.shared.model import Nanos, RequestRecord, Telemetry

Rejections = Mapping[tuple[str, str], int]
"""Records dropped from a batch: (kind, reason) -> count; kind is gpu, process, host,
request, event or agent_stats, and reason a snake_case token such as negative_latency."""


@dataclass(frozen=True, slots=True)
class Source:
    """Who sent a batch: the agent's identity, with `version` split out of the labels."""

    agent_id: str
    service: str
    instance: str = ""
    host: str = ""
    target_pid: int = 0
    version: str = ""
    labels: tuple[tuple[str, str], ...] = ()  # sorted by key, without "version"
    agent_version: str = ""

    def labels_json(self) -> str:
        """The labels as a JSON object with sorted keys (stable text for storage)."""
        return json.dumps(dict(self.labels), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class FrameRows:
    """Frames as columns; `ids[i]` is the content hash of (names[i], files[i], lines[i])."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    files: tuple[str, ...]
    lines: tuple[int, ...]

    @classmethod
    def empty(cls) -> FrameRows:
        return cls((), (), (), ())


@dataclass(frozen=True, slots=True)
class StackRows:
    """Stacks as columns; `frame_ids[i]` are frame content hashes, root first."""

    ids: tuple[int, ...]
    frame_ids: tuple[tuple[int, ...], ...]

    @classmethod
    def empty(cls) -> StackRows:
        return cls((), ())


@dataclass(frozen=True, slots=True)
class WindowRows:
    """One profile window; the i-th entry of each tuple column is one sample row."""

    start_ns: Nanos
    end_ns: Nanos
    rate_hz: float
    idle_included: bool
    gil_only: bool
    native: bool
    errors: int
    stack_ids: tuple[int, ...]
    threads: tuple[str, ...]
    pids: tuple[int, ...]  # the sampled process; a row's 0 is resolved to target_pid
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True, eq=False)
class RequestRows(Sequence[RequestRecord]):
    """A batch's request records as columns, named as RequestRecord's fields: the i-th
    entry of each is one request.

    Columns because a busy model server sends thousands of requests a batch, and every
    step after the decoder wants columns (the Arrow table, the latency metrics, the
    late-request checks): building a frozen record per request and taking it apart
    again cost more than all the rest of a request's storing. It is still a sequence
    of RequestRecord, built on demand, for the code that wants one record at a time,
    and compares equal to a tuple of the same records.
    """

    end_ns: tuple[Nanos, ...]
    latency_ns: tuple[Nanos, ...]
    request_bytes: tuple[int, ...]
    response_bytes: tuple[int, ...]
    route: tuple[str, ...]
    method: tuple[str, ...]
    status: tuple[int, ...]
    ttfb_ns: tuple[Nanos | None, ...]
    chunk_gaps_us: tuple[tuple[int, ...], ...]
    chunk_gaps_dropped: tuple[int, ...]
    app_size: tuple[int | None, ...]
    pid: tuple[int, ...]
    source: tuple[str, ...]
    trace_id: tuple[str | None, ...]

    def __post_init__(self) -> None:
        lengths = {len(getattr(self, f.name)) for f in fields(self)}
        if len(lengths) > 1:
            raise ValueError(f"request columns of different lengths: {sorted(lengths)}")

    @classmethod
    def of(cls, records: Sequence[RequestRecord]) -> RequestRows:
        """`records` as columns (themselves when they already are)."""
        if isinstance(records, RequestRows):
            return records
        return cls(*(tuple(getattr(r, f.name) for r in records) for f in fields(cls)))

    def __len__(self) -> int:
        return len(self.end_ns)

    @overload
    def __getitem__(self, index: int) -> RequestRecord: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[RequestRecord, ...]: ...
    def __getitem__(self, index: int | slice) -> RequestRecord | tuple[RequestRecord, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        return RequestRecord(*(getattr(self, f.name)[index] for f in fields(self)))

    def __iter__(self) -> Iterator[RequestRecord]:
        return (RequestRecord(*row) for row in zip(*(getattr(self, f.name) for f in fields(self)),
                                                     strict=True))

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))


NO_REQUESTS = RequestRows((), (), (), (), (), (), (), (), (), (), (), (), (), ())


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A validated batch, ready to store.

    `frames` and `stacks` hold every frame and stack the window refers to (not only
    those new on the stream), so a batch stored on its own is always complete; a store
    skips the ids it already has. `telemetry` holds the records that passed validation;
    the others are only counted in `rejected`.
    """

    source: Source
    seq: int
    frames: FrameRows
    stacks: StackRows
    window: WindowRows | None
    # valid telemetry records; route, method and source of requests already resolved,
    # and the requests as RequestRows where the decoder made them (a hand-made batch
    # may hold a tuple of records: readers take RequestRows.of(telemetry.requests))
    telemetry: Telemetry = field(default_factory=Telemetry)
    rejected: Rejections = field(default_factory=dict)  # dropped records, counted

    @property
    def sample_count(self) -> int:
        """Samples (the sum of counts) this batch carries."""
        return sum(self.window.counts) if self.window else 0

    @property
    def row_count(self) -> int:
        """Sample rows this batch carries."""
        return len(self.window.counts) if self.window else 0
