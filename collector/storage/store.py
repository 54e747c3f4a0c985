"""The storage seam: what ingest and queries need from a store, and the values it returns.

Ingest and query depend only on `Store`, so a DuckLake backend (PostgreSQL catalog,
Parquet files, many collectors) is a new class, not a rewrite. DuckDBStore
(duckdb/backend.py) is the embedded one. What reads are asked and return is in reads.py.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyrometer.agent.shared.model import Event, Nanos
from pyrometer.collector.model import Profile
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.label_sets import LabelSet, LabelSetSummary, StepSamples
from pyrometer.collector.storage.reads import (
    EngineBucket,
    EngineRow,
    EngineStep,
    EventListing,
    GpuPoint,
    GpuRow,
    HostPoint,
    InstanceLatency,
    LatencyPoint,
    ProcessPoint,
    ProfileLabels,
    QuantilePoint,
    RequestRow,
    RequestSample,
    RequestTally,
    RouteSeries,
    SeriesQuery,
    StoredEvent,
    VersionCost,
)


class BatchOutcome(enum.Enum):
    """What a commit did with one batch."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # seq <= the agent's high-water mark: acknowledged, not stored


@dataclass(frozen=True, slots=True)
class CommitReport:
    """The result of one commit: an outcome per batch (in order), rows appended, and how
    many times it was run again after losing a conflict with another writer (the lake)."""

    outcomes: tuple[BatchOutcome, ...]
    rows_written: Mapping[str, int]  # table name -> rows appended
    conflicts: int = 0


@dataclass(frozen=True, slots=True)
class CompactReport:
    """The result of one compaction step: rollup rows written, and whether the rollups
    now reach the time asked for (else another step has more to do)."""

    rows_written: Mapping[str, int]  # table name -> rows appended
    caught_up: bool


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    """A service that has profile data, for the services listing."""

    name: str
    instances: tuple[str, ...]  # sorted
    first_seen_ns: Nanos  # earliest window start
    last_seen_ns: Nanos  # latest window end
    samples: int


class Store(Protocol):
    """Where ingest writes and queries read. Implementations are thread-safe."""

    def commit(self, batches: Sequence[DecodedBatch]) -> CommitReport:
        """Store the batches in one transaction, skipping retried duplicates.

        All or nothing: on failure it raises StorageError and nothing is stored.
        Batches of one agent are taken in the order given. A batch's samples and its
        telemetry records go in the same transaction.
        """
        ...

    def profile(
        self, service: str, start_ns: Nanos, end_ns: Nanos, *, instance: str | None = None,
        version: str | None = None, thread: str | None = None, pid: int | None = None,
    ) -> Profile:
        """Merged stacks of `service` for the windows whose midpoint is in [start, end).

        Time resolution is the agent's window (a few seconds): a window counts whole or
        not at all. Optional filters match exactly. No data gives an empty Profile.
        """
        ...

    def services(self) -> list[ServiceSummary]:
        """Every service with profile data, sorted by name."""
        ...

    def profile_labels(self, service: str, start_ns: Nanos, end_ns: Nanos) -> ProfileLabels:
        """The label values of the samples `profile` would merge for the window, unfiltered."""
        ...

    def label_sets(self, start_ns: Nanos, end_ns: Nanos) -> list[LabelSetSummary]:
        """Every distinct label set of the sample windows whose midpoint is in [start, end)."""
        ...

    def select_profile(self, start_ns: Nanos, end_ns: Nanos, sets: Sequence[LabelSet]) -> Profile:
        """Merged stacks of the windows of any of `sets` (as `profile` merges one service's)."""
        ...

    def select_steps(self, start_ns: Nanos, end_ns: Nanos, step_ns: Nanos,
                     sets: Sequence[LabelSet]) -> list[StepSamples]:
        """Samples per label set per step; a window counts in the step of its midpoint."""
        ...

    def latency(self, query: SeriesQuery) -> list[LatencyPoint]:
        """Request latency and sizes per step (filters: instance, version, route)."""
        ...

    def latency_quantile(self, query: SeriesQuery, quantile: str
                         ) -> tuple[list[QuantilePoint], list[RouteSeries], str]:
        """One latency quantile ("p50", "p95", "p99" or "max", as `latency` computes it)
        and the count per step, of the query's requests and of each route's (busiest
        first, as `routes` orders them), in one pass: what spike detection reads (filters:
        instance, version; not route). The third value names what the quantiles were
        computed from: "raw" (every request) or a sketch rollup's resolution ("10s",
        each quantile within 1%: a long series, see the backend)."""
        ...

    def gpu(self, query: SeriesQuery) -> list[GpuPoint]:
        """GPU readings per GPU per step (filters: instance, version)."""
        ...

    def process(self, query: SeriesQuery) -> list[ProcessPoint]:
        """Target process readings per pid per step (filters: instance, version)."""
        ...

    def host(self, query: SeriesQuery) -> list[HostPoint]:
        """Host readings per instance per step (filters: instance, version)."""
        ...

    def engine(self, query: SeriesQuery) -> list[EngineBucket]:
        """The serving engine's series per instance, engine, model and metric per step
        (filters: instance, version)."""
        ...

    def events(self, service: str, start_ns: Nanos, end_ns: Nanos, *,
               kind: str | None = None) -> EventListing:
        """Events of `service` in [start, end), by time."""
        ...

    def request_records(self, service: str, start_ns: Nanos, end_ns: Nanos, *,
                        route: str | None = None, instance: str | None = None,
                        budget: int | None = None) -> list[RequestRow]:
        """Requests that ended in [start, end), by time (capped; the latest are kept).

        With a `budget`, where more requests match, a deterministic sample of about that
        many: each kept by a hash of its own values, so the same rows give the same sample
        and every part of the window is thinned alike (see `request_tally` for exact
        counts).
        """
        ...

    def request_samples(self, service: str, start_ns: Nanos, end_ns: Nanos, *, unit: str,
                        route: str | None = None, instance: str | None = None,
                        budget: int | None = None) -> list[RequestSample]:
        """`request_records`' rows (the same filters, sample and order) as the spike
        analysis judges them: end, latency in ms, size in `unit` ("app size": the
        app-supplied size, None where a request has none; "bytes": its request bytes) and
        version. ValueError for another unit."""
        ...

    def request_tally(self, service: str, start_ns: Nanos, end_ns: Nanos, *,
                      spike: tuple[Nanos, Nanos], baseline_start_ns: Nanos, step_ns: Nanos,
                      slow_ns: Nanos, route: str | None = None, instance: str | None = None,
                      excluded: Sequence[tuple[Nanos, Nanos]] = ()) -> RequestTally:
        """Exact counts of the requests that ended in [start, end) around one spike
        (see RequestTally); the baseline's count leaves out those that ended in
        `excluded` (earlier spikes)."""
        ...

    def instance_latency(self, service: str, baseline: tuple[Nanos, Nanos],
                         spike: tuple[Nanos, Nanos], quantile: float, *,
                         route: str | None = None) -> list[InstanceLatency]:
        """Per instance: its requests' latency quantile (linear interpolation) and count,
        of those that ended in the baseline and of those that ended in the spike."""
        ...

    def gpu_readings(self, service: str, start_ns: Nanos, end_ns: Nanos, *,
                     instance: str | None = None, budget: int | None = None) -> list[GpuRow]:
        """GPU readings in [start, end), by time (capped; the latest are kept); with a
        `budget`, a deterministic sample of about that many as `request_records` takes."""
        ...

    def engine_readings(self, service: str, start_ns: Nanos, end_ns: Nanos) -> list[EngineRow]:
        """The serving engine's readings in [start, end), by time (capped; the latest kept)."""
        ...

    def engine_steps(self, service: str, start_ns: Nanos, end_ns: Nanos, *, origin_ns: Nanos,
                     step_ns: Nanos, instance: str | None = None) -> list[EngineStep]:
        """The serving engine's readings in [start, end) summed per step of the grid from
        `origin_ns`, by step, metric and engine (see EngineStep)."""
        ...

    def slowest_requests(self, service: str, start_ns: Nanos, end_ns: Nanos, *, limit: int,
                         route: str | None = None, instance: str | None = None
                         ) -> list[RequestRow]:
        """The `limit` slowest requests that ended in [start, end), slowest first."""
        ...

    def version_costs(self, service: str, start_ns: Nanos, end_ns: Nanos) -> list[VersionCost]:
        """Per version: its requests and the GPU-seconds its GPUs were busy, in [start, end),
        in the order the versions first appear."""
        ...

    def request_counts(self, service: str, windows: Sequence[tuple[Nanos, Nanos]], *,
                       threshold_ns: Nanos, route: str | None = None) -> list[tuple[int, int]]:
        """(requests, good requests) that ended in each [start, end) window; good: status
        below 500 and latency at most `threshold_ns` (what an SLO counts)."""
        ...

    def routes(self, service: str, start_ns: Nanos, end_ns: Nanos) -> list[tuple[str, int]]:
        """(route, requests) that ended in [start, end), busiest first."""
        ...

    def add_event(self, service: str, event: Event) -> StoredEvent:
        """Store one event that did not come from an agent (agent_id "api"); returns it."""
        ...

    def compact(self, until_ns: Nanos, *, max_span_ns: Nanos = ...) -> CompactReport:
        """Roll up the sample rows of the whole minutes before `until_ns` (and the hours
        they complete) that are not rolled up yet, at most `max_span_ns` of them: one
        short transaction under the write lock; callers repeat until `caught_up`.

        A profile read then takes those buckets from the rollups, with the same answer.
        """
        ...

    def delete_before(self, cutoff_ns: Nanos, *, limit: int = 50_000,
                      rollup_cutoff_ns: Nanos | None = None) -> Mapping[str, int]:
        """Delete up to `limit` rows older than `cutoff_ns` from each time-ordered table,
        and, given `rollup_cutoff_ns`, from each rollup the buckets older than that.

        Each table's chunk is its own short transaction under the write lock, so ingest
        is never held up for long; callers repeat while a table returns `limit` (see
        retention.py). Returns rows deleted per table. Dictionaries (stacks, frames)
        and agent_hwm are never deleted; rollups outlive the raw rows they were summed
        from, until their own cutoff.
        """
        ...

    def close(self) -> None:
        """Release the database; further calls raise StorageError."""
        ...
