"""Pyrometer's domain model: plain frozen values shared by the agent and the collector.

It lives in the agent package because the agent is the base install that every other
part depends on; it imports nothing outside the standard library. Protobuf types never
leave the encoder (agent) and the ingest servicer (collector).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Nanos = int  # nanoseconds since the Unix epoch, or a duration in nanoseconds
NANOS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Frame:
    """One Python frame as py-spy reports it: function, file, current line (0 = unknown)."""

    name: str
    file: str
    line: int = 0


Stack = tuple[Frame, ...]
"""Frames of one sample, root (outermost call) first."""


@dataclass(frozen=True, slots=True)
class SampleKey:
    """What one count in a window is keyed by."""

    stack: Stack
    thread: str = ""  # thread label, e.g. "MainThread (2918)"; "" when threads are not recorded
    pid: int = 0  # the worker process sampled (--subprocesses); 0 = the target itself


@dataclass(frozen=True, slots=True)
class ProfileWindow:
    """All samples py-spy took of the target between start_ns and end_ns (agent clock)."""

    start_ns: Nanos
    end_ns: Nanos
    rate_hz: float  # requested rate; see achieved_rate_hz
    counts: Mapping[SampleKey, int] = field(default_factory=dict)
    idle_included: bool = False  # wall-clock profile: idle stacks are in the counts
    gil_only: bool = False
    native: bool = False
    errors: int = 0  # samples py-spy failed to take

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def duration_ns(self) -> Nanos:
        return self.end_ns - self.start_ns

    @property
    def achieved_rate_hz(self) -> float:
        """Samples per second of window actually recorded (not what was asked for)."""
        if self.duration_ns <= 0:
            return 0.0
        return self.total * NANOS_PER_SECOND / self.duration_ns


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One NVML reading of one GPU; None where the device or driver does not say."""

    time_ns: Nanos
    index: int
    uuid: str = ""
    name: str = ""
    replayed: bool = False  # from a recording (--gpu replay:FILE), not from a GPU
    temperature_c: float | None = None
    slowdown_temperature_c: float | None = None
    memory_temperature_c: float | None = None
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    graphics_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    memory_clock_max_mhz: int | None = None
    clock_event_reasons: int | None = None  # raw NVML bitmask
    power_mw: int | None = None
    power_limit_mw: int | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    utilization_gpu_pct: int | None = None
    utilization_memory_pct: int | None = None
    performance_state: int | None = None
    process_memory_bytes: int | None = None  # the target's (and its workers') memory


@dataclass(frozen=True, slots=True)
class ProcessReading:
    """The target or one of its workers over the interval ending at time_ns."""

    time_ns: Nanos
    pid: int
    interval_s: float
    cpu_user: float  # cores: 1.0 = one core busy for the whole interval
    cpu_system: float
    rss_bytes: int
    threads: int
    ctx_switches_voluntary: int  # in the interval
    ctx_switches_involuntary: int
    # seconds its threads waited runnable for a CPU, per second (None: not known)
    run_queue_wait: float | None = None


@dataclass(frozen=True, slots=True)
class HostReading:
    """The host over the interval ending at time_ns; PSI fields None without /proc/pressure."""

    time_ns: Nanos
    cpu_pct: float
    cpu_count: int
    memory_available_bytes: int
    memory_total_bytes: int
    load1: float
    psi_cpu_some: float | None = None
    psi_memory_some: float | None = None
    psi_memory_full: float | None = None
    psi_io_some: float | None = None
    psi_io_full: float | None = None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One served request as the middleware or the proxy saw it."""

    end_ns: Nanos
    latency_ns: Nanos
    request_bytes: int
    response_bytes: int
    route: str
    method: str
    status: int
    ttfb_ns: Nanos | None = None  # streamed responses: time to first body byte
    chunk_gaps_us: tuple[int, ...] = ()  # gaps between body chunks, microseconds
    chunk_gaps_dropped: int = 0  # gaps beyond the per-request cap, counted
    app_size: int | None = None  # app-supplied size of the work, e.g. tokens
    pid: int = 0  # the worker that served it; 0 = unknown
    source: str = "middleware"  # or "proxy"
    trace_id: str | None = None  # W3C trace id (32 lowercase hex) the request arrived with


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to the target: restart, deploy, config change."""

    time_ns: Nanos
    kind: str
    version: str = ""
    previous_version: str = ""
    pid: int = 0
    previous_pid: int = 0
    attrs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AgentStats:
    """The agent's own footprint and losses; counters are cumulative since its start."""

    time_ns: Nanos
    cpu_cores: float
    rss_bytes: int
    queued_batches: int
    spooled_batches: int
    spool_bytes: int
    dropped_batches: int
    dropped_records: int
    reconnects: int
    pyspy_restarts: int


# The serving engine's series, by canonical name, whatever the engine calls them
# (agent/engine/mapping.py): "mean" ones carry a sum of observations and their count in
# the interval (value / count is the mean), "delta" ones the increase in the interval,
# "gauge" ones the last value read.
ENGINE_METRICS: dict[str, str] = {
    "queue_time_s": "mean",  # time a request waited in the engine's queue
    "compute_time_s": "mean",  # time a request ran (inference/compute, not queued)
    "e2e_s": "mean",  # the engine's own end-to-end latency per request
    "ttft_s": "mean",  # time to first token
    "itl_s": "mean",  # inter-token latency (time per output token)
    "requests": "delta",  # requests completed
    "preemptions": "delta",  # requests preempted (KV cache exhausted) in the interval
    "prompt_tokens": "delta",  # or "mean" per request where the engine has a histogram
    "generation_tokens": "delta",
    "requests_running": "gauge",  # in the running batch
    "requests_waiting": "gauge",  # queued, not yet scheduled
    "max_running": "gauge",  # the configured batch limit, where a mapping names one
    "kv_cache_usage": "gauge",  # fraction 0..1 of KV-cache blocks in use
}


@dataclass(frozen=True, slots=True)
class EngineReading:
    """One canonical engine series of one model over the scrape interval ending at time_ns."""

    time_ns: Nanos
    metric: str  # a key of ENGINE_METRICS
    value: float  # gauge: the value; delta: the increase; mean: the sum of observations
    interval_s: float
    count: int = 0  # observations in the interval behind a sum (value / count = mean); else 0
    engine: str = ""  # vllm, triton, torchserve, tgi, or the mapping file's engine name
    model: str = ""


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What one batch carries besides stacks: records gathered since the last batch."""

    # tuples, or (the collector's decoder) columns that read as tuples
    gpu: Sequence[GpuReading] = ()
    process: Sequence[ProcessReading] = ()
    host: Sequence[HostReading] = ()
    requests: Sequence[RequestRecord] = ()
    events: tuple[Event, ...] = ()
    agent_stats: tuple[AgentStats, ...] = ()
    engine: tuple[EngineReading, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.gpu or self.process or self.host or self.requests or self.events
                    or self.agent_stats or self.engine)
