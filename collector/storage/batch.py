"""Values passed from ingest to storage: a decoded batch as columnar rows.

Kept apart from the decoder so that a store depends on these plain values only, never
on protobuf. Frame and stack ids here are content hashes (see decode.frame_id).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos, Telemetry

Rejections = Mapping[tuple[str, str], int]
"""Records dropped from a batch: (kind, reason) -> count; kind is gpu, process, host,
request, event or agent_stats, and reason a snake_case token such as negative_latency."""


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one batch and one stream may hold; past these a batch is RESOURCE_EXHAUSTED."""

    max_stack_depth: int = 512
    max_string_bytes: int = 4096
    max_rows: int = 100_000  # rows of one profile window
    max_delta_entries: int = 100_000  # new strings, frames or stacks in one batch
    max_table_entries: int = 2_000_000  # strings, frames or stacks on one stream
    max_labels: int = 64
    max_count: int = 2**32  # one row's sample count; keeps sums far from int64 overflow
    max_rate_hz: float = 10_000.0
    # agents' clocks drift; an hour ahead is a broken clock, not drift
    max_future_ns: Nanos = 3600 * NANOS_PER_SECOND
    max_window_ns: Nanos = 3600 * NANOS_PER_SECOND
    # telemetry: past max_records of one kind the batch is RESOURCE_EXHAUSTED; past the
    # other bounds one record is dropped (see records.py)
    max_records: int = 100_000
    max_chunk_gaps: int = 10_000  # gaps listed for one request
    max_payload_bytes: int = 2**40  # a request or response body over 1 TiB is a bug
    max_memory_bytes: int = 2**50  # hosts with terabytes of RAM exist; petabytes do not
    max_latency_ns: Nanos = 86_400 * NANOS_PER_SECOND
    max_cpu_cores: float = 65_536.0
    max_load: float = 1e6


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
    # valid telemetry records; route, method and source of requests already resolved
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
