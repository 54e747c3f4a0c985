"""Values passed from ingest to storage: a decoded batch as columnar rows.

Kept apart from the decoder so that a store depends on these plain values only, never
on protobuf. Frame and stack ids here are content hashes (see decode.frame_id).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyrometer.agent.shared.model import Nanos, Telemetry

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
