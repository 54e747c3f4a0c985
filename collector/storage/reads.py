"""What a store's reads are asked and what they return: plain values, no SQL.

Part of the storage seam (store.py): ingest, query, analysis and the API see these, never
a backend's rows. A backend turns a SeriesQuery into its own query language (for DuckDB,
duckdb/where.py) and its rows into these values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from pyrometer.agent.shared.model import Nanos

API_AGENT_ID = "api"  # agent_id of events posted to the HTTP API rather than sent by an agent
# shown wherever replayed GPU data is (GpuPoint.replayed, GpuRow.replayed)
REPLAYED_NOTICE = "GPU data replayed from a recording, not read from a GPU"


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """Which records a series covers and how they are bucketed; None filters match all."""

    service: str
    start_ns: Nanos
    end_ns: Nanos
    step_ns: Nanos
    instance: str | None = None
    version: str | None = None
    route: str | None = None  # requests only

    def bucket_end(self, start_ns: Nanos) -> Nanos:
        return min(start_ns + self.step_ns, self.end_ns)


@dataclass(frozen=True, slots=True)
class ProfileLabels:
    """The distinct label values of a service's samples in a window, each sorted: what a
    flame graph filter could have matched (for the answer to one that matched nothing)."""

    instance: tuple[str, ...] = ()
    version: tuple[str, ...] = ()
    thread: tuple[str, ...] = ()
    pid: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LatencyPoint:
    """Requests that ended in one step; latencies in ms, sizes in bytes."""

    start_ns: Nanos
    end_ns: Nanos
    count: int
    errors: int  # status >= 500
    rate_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    request_bytes_p50: float
    request_bytes_p95: float
    response_bytes_p50: float
    response_bytes_p95: float
    ttfb_p50_ms: float | None  # None when no request in the step was streamed
    ttfb_p95_ms: float | None


QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}  # and "max"


@dataclass(frozen=True, slots=True)
class QuantilePoint:
    """One latency quantile of the requests that ended in one step, and their count."""

    start_ns: Nanos
    end_ns: Nanos
    count: int
    latency_ms: float


@dataclass(frozen=True, slots=True)
class RouteSeries:
    """One route's `QuantilePoint`s; route None: the requests that carry no route."""

    route: str | None
    requests: int
    points: tuple[QuantilePoint, ...]


@dataclass(frozen=True, slots=True)
class GpuPoint:
    """One GPU (instance, index) over one step; averages of the readings that had a value."""

    instance: str
    gpu_index: int
    uuid: str
    name: str
    start_ns: Nanos
    readings: int
    temperature_c: float | None
    sm_clock_mhz: float | None
    sm_clock_max_mhz: int | None  # the highest reported in the step
    power_w: float | None
    power_limit_w: float | None
    memory_used_bytes: float | None
    memory_total_bytes: int | None
    utilization_gpu_pct: float | None
    utilization_memory_pct: float | None
    # reason -> fraction of the step's readings (with a bitmask) that had its bit set;
    # empty when no reading in the step reported reasons
    throttle: tuple[tuple[str, float], ...]
    replayed: bool  # some reading came from a recording, not from a GPU
    # the lowest slowdown threshold reported in the step (the page draws temperature
    # against it); None when no reading said
    slowdown_temperature_c: float | None = None


@dataclass(frozen=True, slots=True)
class ProcessPoint:
    """One process (instance, pid) over one step."""

    instance: str
    pid: int
    start_ns: Nanos
    readings: int
    cpu_user: float  # cores, average over the readings
    cpu_system: float
    rss_bytes_max: int
    threads_max: int
    ctx_switches_voluntary: int  # summed over the step
    ctx_switches_involuntary: int
    run_queue_wait: float | None = None  # thread-seconds per second, average; None: unknown


@dataclass(frozen=True, slots=True)
class HostPoint:
    """One instance's host over one step; PSI None where the host has no /proc/pressure."""

    instance: str
    host: str
    start_ns: Nanos
    readings: int
    cpu_pct: float
    cpu_count: int
    memory_available_bytes_min: int  # the tightest moment of the step
    memory_total_bytes: int
    load1: float
    psi_cpu_some: float | None
    psi_memory_some: float | None
    psi_memory_full: float | None
    psi_io_some: float | None
    psi_io_full: float | None


# RequestRow and GpuRow are NamedTuples, not frozen dataclasses: a spike's analysis
# reads every request and GPU reading of its baseline (hundreds of thousands over a fleet),
# and a NamedTuple is built five times faster (0.2 us against 1.0 us a row: a frozen
# dataclass sets each field through object.__setattr__), just as immutable.
class RequestRow(NamedTuple):
    time_ns: Nanos  # the request's end
    latency_ns: Nanos
    request_bytes: int
    app_size: int | None
    version: str
    route: str
    status: int
    instance: str = ""
    trace_id: str | None = None  # W3C trace id the request came with, where it had one


class RequestSample(NamedTuple):
    """One request as the spike analysis judges it: when it ended, how long it took, its
    size and the version serving it (`Store.request_samples`).

    Read straight into this shape, not converted from RequestRow: a spike's sample of
    50,000 requests was built twice (a RequestRow, then this), which took 170 ms of a
    day's analysis where one read now takes 65 ms."""

    end_ns: Nanos
    latency_ms: float
    size: float | None  # app-supplied size (tokens) where the app gave one, else bytes
    version: str = ""

    @property
    def start_ns(self) -> Nanos:
        return self.end_ns - round(self.latency_ms * 1_000_000)


@dataclass(frozen=True, slots=True)
class RequestTally:
    """Exact counts of one spike's requests, counted where they are stored.

    The spike analysis may judge a sample of a large fleet's requests (`request_samples`
    with a budget); what a sample cannot give exactly, it takes from here: how many
    requests arrived and completed in each step (rates, CPU per request), how many ended
    in the baseline and in the spike (profile samples per request), how many each
    version served in the spike, and the first slow request of the spike's first step
    (its onset). Steps are on the spike's grid: step i holds [spike start + i * step,
    spike start + (i + 1) * step), negative before the spike.
    """

    total: int  # requests that ended in the window counted
    ended: dict[int, int]  # per step, by the request's end
    began: dict[int, int]  # per step, by its start (end less latency)
    baseline: int  # ended in [baseline start, spike start), outside earlier spikes
    inside: int  # ended in the spike
    versions: dict[str, int]  # of those that ended in the spike, per version
    first_slow_ns: Nanos | None  # end of the first request of the spike's first step over `slow_ns`
    sized: int = 0  # of `total`, those that carried an app-supplied size (app_size)


@dataclass(frozen=True, slots=True)
class InstanceLatency:
    """One instance's latency percentile and requests, in a baseline and in a spike."""

    instance: str
    baseline_ms: float
    spike_ms: float
    baseline_requests: int
    spike_requests: int

    @property
    def ratio(self) -> float:
        return self.spike_ms / self.baseline_ms if self.baseline_ms > 0 else math.nan


class GpuRow(NamedTuple):
    time_ns: Nanos
    instance: str
    gpu_index: int
    clock_event_reasons: int | None
    sm_clock_mhz: int | None
    sm_clock_max_mhz: int | None
    temperature_c: float | None
    slowdown_temperature_c: float | None
    replayed: bool


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


@dataclass(frozen=True, slots=True)
class VersionCost:
    """One version's requests and the GPU time they took over a window."""

    version: str
    requests: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    gpu_busy_s: float  # GPU-seconds of work: utilization x time, summed over the GPUs
    gpu_observed_s: float  # GPU-seconds the readings covered
    gpus: int
    replayed: bool  # any reading came from a recording, not a GPU
    first_ns: Nanos  # its first request (or GPU reading) in the window


@dataclass(frozen=True, slots=True)
class EngineBucket:
    """One engine series (instance, engine, model, metric) over one step: the readings'
    aggregates, from which the API derives the step's value by the metric's kind."""

    instance: str
    engine: str
    model: str
    metric: str
    start_ns: Nanos
    readings: int
    total: float  # the sum of the readings' values (increases, or sums of observations)
    observations: int  # behind a sum: how many were summed (0 for counters and gauges)
    covered_s: float  # the scrape intervals the readings covered
    mean_reading: float  # the readings' average (a gauge's value over the step)
    max_reading: float


@dataclass(frozen=True, slots=True)
class EngineRow:
    """One stored engine reading (agent --scrape): see ENGINE_METRICS in the shared model."""

    time_ns: Nanos
    instance: str
    metric: str
    value: float
    count: int
    interval_s: float
    engine: str
    model: str


@dataclass(frozen=True, slots=True)
class EngineStep:
    """One engine's metric over one step of a spike's grid (step i: [spike start + i * step,
    spike start + (i + 1) * step)), every reading in it summed, so that the spike analysis
    reads a day's fleet as a few hundred of these, not hundreds of thousands of readings.

    A scrape is one instance's reading at one time; it reports a value per model. Every
    field adds up over engines and instances: a gauge's mean over the step's scrapes is
    `total / scrapes` (the models of a scrape summed) or `scrape_highest / scrapes` (their
    highest); a histogram's mean per observation is `counted_total / count`; a counter's
    increase is `total`.
    """

    step: int
    metric: str
    engine: str
    total: float  # every reading's value
    counted_total: float  # the values of the readings that have a count (histograms)
    count: int  # the readings' counts (observations)
    scrapes: int
    scrape_highest: float  # each scrape's highest value over its models, summed
    highest: float  # the highest single value

