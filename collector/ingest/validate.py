"""Validation of a batch's telemetry, record by record: GPU, process, host, request, event,
engine.

A bad record is not a bad batch. A GPU reading with a temperature of 4000 C or a request
with a negative latency says that one sampler or one middleware call went wrong, not
that the stream is broken: the record is dropped with a short reason, counted (by kind
and reason, in `DecodedBatch.rejected` and in pyrometer_records_rejected_total), and the
rest of the batch is stored. Failing the whole batch instead would make the agent retry
it for ever, and lose the stacks and the good records with it.

Requests and the GPU, process and host readings are checked a column at a time first (a
busy model server sends thousands of requests a batch; see `_columns`), and a record at a
time only in a batch that holds a bad one, so the outcome is the same as checking each.

Whole-batch problems stay whole-batch errors (decode.py): a string id that the stream's
dictionary does not define means both ends disagree about the dictionary, so nothing in
the batch can be trusted; too many records is a size limit.

No I/O here; the protobuf records go in, the agent's domain values come out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, TypeVar

from pyrometer.agent.shared.clock_events import KNOWN_CLOCK_EVENT_MASK
from pyrometer.agent.shared.model import (
    ENGINE_METRICS,
    NANOS_PER_SECOND,
    AgentStats,
    EngineReading,
    Event,
    GpuReading,
    HostReading,
    Nanos,
    ProcessReading,
    RequestRecord,
    Telemetry,
)
from pyrometer.collector.errors import BatchLimitError, InvalidBatchError
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.storage.batch import Columns, Rejections
from pyrometer.proto import ingest_pb2

# No profiler ran before this; a smaller timestamp is a unit or clock bug (2000-01-01).
MIN_TIME_NS: Nanos = 946_684_800 * NANOS_PER_SECOND
INT64_MAX = 2**63 - 1

MIN_TEMPERATURE_C, MAX_TEMPERATURE_C = -50.0, 200.0
MAX_GPU_INDEX = 1023
MAX_PERFORMANCE_STATE = 15
MAX_HTTP_STATUS = 999
MAX_CLOCK_MHZ = 100_000  # 100 GHz
MAX_POWER_MW = 100_000_000  # 100 kW for one device
# per-interval counters are summed over a step: this bound keeps any sum inside int64
MAX_INTERVAL_COUNT = 2**40
# an engine series' value: a sum of seconds or tokens over one interval, a count, a gauge
MAX_ENGINE_VALUE = 1e15

_GPU_TEMPERATURES = ("temperature_c", "slowdown_temperature_c", "memory_temperature_c")
_GPU_PERCENTS = ("utilization_gpu_pct", "utilization_memory_pct")
_GPU_MEMORY = ("memory_used_bytes", "memory_total_bytes", "process_memory_bytes")
_GPU_CLOCKS = ("sm_clock_mhz", "sm_clock_max_mhz", "graphics_clock_mhz", "memory_clock_mhz",
               "memory_clock_max_mhz")
_GPU_POWER = ("power_mw", "power_limit_mw")
_GPU_OTHER = ("clock_event_reasons", "performance_state")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_HEX_DIGITS = re.compile(r"[0-9a-f]*")
_GPU_OPTIONAL = _GPU_TEMPERATURES + _GPU_PERCENTS + _GPU_MEMORY + _GPU_CLOCKS + _GPU_POWER + _GPU_OTHER
_PSI = ("psi_cpu_some", "psi_memory_some", "psi_memory_full", "psi_io_some", "psi_io_full")


class _Reject(Exception):
    """One record is unusable; `reason` is a short snake_case token for metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _f32(value: float) -> float:
    # proto floats are float32: 71.3 arrives as 71.30000305...; keep what the agent meant
    return float(f"{value:.7g}")


def _within(value: float | None, low: float, high: float, reason: str) -> None:
    # written so that NaN fails too: every comparison with NaN is false
    if value is not None and not low <= value <= high:
        raise _Reject(reason)


def _text(value: str, limits: DecodeLimits) -> str:
    if len(value.encode()) > limits.max_string_bytes:
        raise _Reject("string_too_long")
    return value


def _optional(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def _optionals(msg: Any, names: tuple[str, ...]) -> dict[str, Any]:
    # `_optional` of each name (HasField per name is cheaper than one ListFields())
    has = msg.HasField
    return {name: getattr(msg, name) if has(name) else None for name in names}


class _Checker:
    """Validates records against one batch's clock and limits."""

    def __init__(self, now_ns: Nanos, limits: DecodeLimits) -> None:
        self.now_ns = now_ns
        self.limits = limits
        # checked in this order, so a reading with several bad values keeps its reason
        self.gpu_bounds: tuple[tuple[tuple[str, ...], float, float, str], ...] = (
            (_GPU_PERCENTS, 0, 100, "percent_out_of_range"),
            (_GPU_MEMORY, 0, limits.max_memory_bytes, "size_out_of_range"),
            (_GPU_CLOCKS, 0, MAX_CLOCK_MHZ, "clock_out_of_range"),
            (_GPU_POWER, 0, MAX_POWER_MW, "power_out_of_range"),
        )

    def time(self, ns: Nanos) -> Nanos:
        # the same bounds as a profile window's: after 2000, at most max_future ahead
        _within(ns, MIN_TIME_NS, self.now_ns + self.limits.max_future_ns, "time_out_of_range")
        return ns

    def times(self, column: Sequence[Nanos]) -> bool:
        """Whether every time of a column passes `time`."""
        return _all_within(column, MIN_TIME_NS, self.now_ns + self.limits.max_future_ns)

    def gpu(self, msg: ingest_pb2.GpuReading) -> GpuReading:
        values = _optionals(msg, _GPU_OPTIONAL)
        for name in _GPU_TEMPERATURES:
            value = values[name]
            if value is not None:
                _within(value, MIN_TEMPERATURE_C, MAX_TEMPERATURE_C, "temperature_out_of_range")
                values[name] = _f32(value)
        for names, low, high, reason in self.gpu_bounds:
            for name in names:
                value = values[name]
                # written so that NaN fails too, as in _within
                if value is not None and not low <= value <= high:
                    raise _Reject(reason)
        reasons = values["clock_event_reasons"]
        if reasons is not None and reasons & ~KNOWN_CLOCK_EVENT_MASK:
            raise _Reject("unknown_clock_event_reason")
        _within(values["performance_state"], 0, MAX_PERFORMANCE_STATE,
                "performance_state_out_of_range")
        _within(msg.index, 0, MAX_GPU_INDEX, "gpu_index_out_of_range")
        return GpuReading(
            time_ns=self.time(msg.time_unix_nanos), index=msg.index,
            uuid=_text(msg.uuid, self.limits), name=_text(msg.name, self.limits),
            replayed=msg.replayed, **values,
        )

    def process(self, msg: ingest_pb2.ProcessReading) -> ProcessReading:
        _within(msg.pid, 0, 2**31 - 1, "pid_out_of_range")
        _within(msg.interval_s, 1e-3, 3600, "interval_out_of_range")
        for cores in (msg.cpu_user, msg.cpu_system):
            _within(cores, 0, self.limits.max_cpu_cores, "cpu_out_of_range")
        _within(msg.rss_bytes, 0, self.limits.max_memory_bytes, "size_out_of_range")
        for count in (msg.ctx_switches_voluntary, msg.ctx_switches_involuntary):
            _within(count, 0, MAX_INTERVAL_COUNT, "count_out_of_range")
        wait = _optional(msg, "run_queue_wait")  # thread-seconds per second, like cores
        if wait is not None:
            _within(wait, 0, self.limits.max_cpu_cores, "cpu_out_of_range")
        return ProcessReading(
            time_ns=self.time(msg.time_unix_nanos), pid=msg.pid, interval_s=_f32(msg.interval_s),
            cpu_user=_f32(msg.cpu_user), cpu_system=_f32(msg.cpu_system), rss_bytes=msg.rss_bytes,
            threads=msg.threads, ctx_switches_voluntary=msg.ctx_switches_voluntary,
            ctx_switches_involuntary=msg.ctx_switches_involuntary,
            run_queue_wait=None if wait is None else _f32(wait),
        )

    def host(self, msg: ingest_pb2.HostReading) -> HostReading:
        psi = _optionals(msg, _PSI)
        for name, value in psi.items():
            if value is not None:
                _within(value, 0, 100, "percent_out_of_range")
                psi[name] = _f32(value)
        _within(msg.cpu_pct, 0, 100, "percent_out_of_range")
        for size in (msg.memory_available_bytes, msg.memory_total_bytes):
            _within(size, 0, self.limits.max_memory_bytes, "size_out_of_range")
        _within(msg.load1, 0, self.limits.max_load, "load_out_of_range")
        return HostReading(
            time_ns=self.time(msg.time_unix_nanos), cpu_pct=_f32(msg.cpu_pct),
            cpu_count=msg.cpu_count, memory_available_bytes=msg.memory_available_bytes,
            memory_total_bytes=msg.memory_total_bytes, load1=_f32(msg.load1), **psi,
        )

    def request(self, msg: ingest_pb2.RequestRecord, text: Callable[[int], str]) -> RequestRecord:
        limits = self.limits
        if msg.latency_nanos < 0:
            raise _Reject("negative_latency")
        _within(msg.latency_nanos, 0, limits.max_latency_ns, "latency_out_of_range")
        ttfb = _optional(msg, "ttfb_nanos")
        if ttfb is not None and ttfb < 0:
            raise _Reject("negative_ttfb")
        _within(ttfb, 0, limits.max_latency_ns, "latency_out_of_range")
        for size in (msg.request_bytes, msg.response_bytes):
            _within(size, 0, limits.max_payload_bytes, "size_out_of_range")
        app_size = _optional(msg, "app_size")
        _within(app_size, 0, INT64_MAX, "size_out_of_range")
        if len(msg.chunk_gaps_us) > limits.max_chunk_gaps:
            raise _Reject("too_many_chunk_gaps")
        _within(msg.status, 0, MAX_HTTP_STATUS, "status_out_of_range")
        _within(msg.pid, 0, 2**31 - 1, "pid_out_of_range")
        trace_id = _optional(msg, "trace_id")
        if trace_id is not None and _TRACE_ID.fullmatch(trace_id) is None:
            raise _Reject("bad_trace_id")
        return RequestRecord(
            end_ns=self.time(msg.end_unix_nanos), latency_ns=msg.latency_nanos,
            request_bytes=msg.request_bytes, response_bytes=msg.response_bytes,
            route=text(msg.route), method=text(msg.method), status=msg.status, ttfb_ns=ttfb,
            chunk_gaps_us=tuple(msg.chunk_gaps_us), chunk_gaps_dropped=msg.chunk_gaps_dropped,
            app_size=app_size, pid=msg.pid, source=text(msg.source), trace_id=trace_id,
        )

    def agent_stats(self, msg: ingest_pb2.AgentStats) -> AgentStats:
        _within(msg.cpu_cores, 0, self.limits.max_cpu_cores, "cpu_out_of_range")
        for size in (msg.rss_bytes, msg.spool_bytes):
            _within(size, 0, self.limits.max_memory_bytes, "size_out_of_range")
        if msg.spooled_batches > msg.queued_batches:
            raise _Reject("spooled_exceeds_queued")  # the spooled ones are part of the queue
        # cumulative counters: stored as BIGINT, and past 2**40 they are a wrapped counter
        for count in (msg.dropped_batches, msg.dropped_records, msg.reconnects,
                      msg.pyspy_restarts):
            _within(count, 0, MAX_INTERVAL_COUNT, "count_out_of_range")
        return AgentStats(
            time_ns=self.time(msg.time_unix_nanos), cpu_cores=_f32(msg.cpu_cores),
            rss_bytes=msg.rss_bytes, queued_batches=msg.queued_batches,
            spooled_batches=msg.spooled_batches, spool_bytes=msg.spool_bytes,
            dropped_batches=msg.dropped_batches, dropped_records=msg.dropped_records,
            reconnects=msg.reconnects, pyspy_restarts=msg.pyspy_restarts,
        )

    def engine(self, msg: ingest_pb2.EngineReading) -> EngineReading:
        if msg.metric not in ENGINE_METRICS:
            raise _Reject("unknown_engine_metric")
        _within(msg.value, 0, MAX_ENGINE_VALUE, "value_out_of_range")
        _within(msg.interval_s, 1e-3, 3600, "interval_out_of_range")
        _within(msg.count, 0, MAX_INTERVAL_COUNT, "count_out_of_range")
        if msg.metric == "kv_cache_usage" and msg.value > 1.0:
            raise _Reject("fraction_out_of_range")
        return EngineReading(
            time_ns=self.time(msg.time_unix_nanos), metric=msg.metric, value=msg.value,
            interval_s=_f32(msg.interval_s), count=msg.count,
            engine=_text(msg.engine, self.limits), model=_text(msg.model, self.limits),
        )

    def event(self, msg: ingest_pb2.Event) -> Event:
        if not msg.kind:
            raise _Reject("empty_kind")
        if len(msg.attrs) > self.limits.max_labels:
            raise _Reject("too_many_attrs")
        if any(not key for key in msg.attrs):
            raise _Reject("empty_attr_key")
        for pid in (msg.pid, msg.previous_pid):
            _within(pid, 0, 2**31 - 1, "pid_out_of_range")
        attrs = tuple(sorted((_text(k, self.limits), _text(v, self.limits))
                             for k, v in msg.attrs.items()))
        return Event(
            time_ns=self.time(msg.time_unix_nanos), kind=_text(msg.kind, self.limits),
            version=_text(msg.version, self.limits),
            previous_version=_text(msg.previous_version, self.limits),
            pid=msg.pid, previous_pid=msg.previous_pid, attrs=attrs,
        )


def _all_within(values: Sequence[Any], low: float, high: float) -> bool:
    # as _within for each value, None left out: min and max in [low, high], and no NaN
    # (min and max skip a NaN that is not first; the sum of any column holding one is NaN)
    present = [v for v in values if v is not None] if None in values else values
    if not present:
        return True
    total = sum(present)
    return bool(low <= min(present) and max(present) <= high and total == total)


def _all_trace_ids(values: Sequence[str | None]) -> bool:
    # each present one 32 lowercase hex digits, as _TRACE_ID.fullmatch, for the lot
    present = [v for v in values if v is not None]
    return (not present or (set(map(len, present)) == {32}
                            and _HEX_DIGITS.fullmatch("".join(present)) is not None))


def _all_texts(values: Sequence[str], limits: DecodeLimits) -> bool:
    return all(len(v.encode()) <= limits.max_string_bytes for v in set(values))


def _f32s(values: Sequence[float | None]) -> list[float | None]:
    # _f32 of each (None kept), once per distinct value: interval_s and the like repeat
    rounded = {v: _f32(v) for v in set(values) if v is not None}
    return [None if v is None else rounded[v] for v in values]


def _optional_column(msgs: Sequence[Any], name: str) -> list[Any]:
    return [getattr(m, name) if m.HasField(name) else None for m in msgs]


_T = TypeVar("_T")


def _columns(kind: str, record_type: type[_T], msgs: Sequence[Any], valid: bool,
             columns: Callable[[], dict[str, Sequence[Any]]], convert: Callable[[Any], _T],
             rejected: Counter[tuple[str, str]]) -> Columns[_T]:
    """A batch's records of one kind as Columns: `columns()` when the column-wise
    checks passed (`valid`); else each record through `convert`, the per-record check,
    which finds the bad ones and their reasons. The column-wise pass never decides a
    record's fate, so both ways keep exactly the same records (property tests hold
    them to it); it only saves building and checking a record at a time."""
    if valid:
        return Columns(record_type, columns())
    return Columns.of(record_type, _keep(kind, convert, msgs, rejected))


def _requests(msgs: Sequence[ingest_pb2.RequestRecord], check: _Checker,
              text: Callable[[int], str], rejected: Counter[tuple[str, str]]
              ) -> Columns[RequestRecord]:
    """The valid requests of a batch, checked a column at a time (see `_columns`)."""
    limits = check.limits
    msgs = list(msgs)  # a list is read faster than protobuf's repeated field, 14 times
    end = [m.end_unix_nanos for m in msgs]
    latency = [m.latency_nanos for m in msgs]
    request_bytes = [m.request_bytes for m in msgs]
    response_bytes = [m.response_bytes for m in msgs]
    status = [m.status for m in msgs]
    gaps = [tuple(g) if (g := m.chunk_gaps_us) else () for m in msgs]  # mostly empty
    pid = [m.pid for m in msgs]
    ttfb = _optional_column(msgs, "ttfb_nanos")
    app_size = _optional_column(msgs, "app_size")
    trace_id = _optional_column(msgs, "trace_id")
    valid = (check.times(end)
             and _all_within(latency, 0, limits.max_latency_ns)
             and _all_within(ttfb, 0, limits.max_latency_ns)
             and _all_within(request_bytes, 0, limits.max_payload_bytes)
             and _all_within(response_bytes, 0, limits.max_payload_bytes)
             and _all_within(app_size, 0, INT64_MAX)
             and max(map(len, gaps), default=0) <= limits.max_chunk_gaps
             and _all_within(status, 0, MAX_HTTP_STATUS)
             and _all_within(pid, 0, 2**31 - 1)
             and _all_trace_ids(trace_id))
    return _columns("request", RequestRecord, msgs, valid, lambda: {
        "end_ns": end, "latency_ns": latency, "request_bytes": request_bytes,
        "response_bytes": response_bytes, "route": [text(m.route) for m in msgs],
        "method": [text(m.method) for m in msgs], "status": status, "ttfb_ns": ttfb,
        "chunk_gaps_us": gaps, "chunk_gaps_dropped": [m.chunk_gaps_dropped for m in msgs],
        "app_size": app_size, "pid": pid, "source": [text(m.source) for m in msgs],
        "trace_id": trace_id,
    }, lambda m: check.request(m, text), rejected)


def _processes(msgs: Sequence[ingest_pb2.ProcessReading], check: _Checker,
               rejected: Counter[tuple[str, str]]) -> Columns[ProcessReading]:
    """The valid process readings, checked a column at a time (see `_columns`)."""
    limits = check.limits
    msgs = list(msgs)
    time_ns = [m.time_unix_nanos for m in msgs]
    pid, interval = [m.pid for m in msgs], [m.interval_s for m in msgs]
    user, system = [m.cpu_user for m in msgs], [m.cpu_system for m in msgs]
    rss = [m.rss_bytes for m in msgs]
    voluntary = [m.ctx_switches_voluntary for m in msgs]
    involuntary = [m.ctx_switches_involuntary for m in msgs]
    wait = _optional_column(msgs, "run_queue_wait")
    valid = (_all_within(pid, 0, 2**31 - 1) and _all_within(interval, 1e-3, 3600)
             and _all_within(user, 0, limits.max_cpu_cores)
             and _all_within(system, 0, limits.max_cpu_cores)
             and _all_within(rss, 0, limits.max_memory_bytes)
             and _all_within(voluntary, 0, MAX_INTERVAL_COUNT)
             and _all_within(involuntary, 0, MAX_INTERVAL_COUNT)
             and _all_within(wait, 0, limits.max_cpu_cores)
             and check.times(time_ns))
    return _columns("process", ProcessReading, msgs, valid, lambda: {
        "time_ns": time_ns, "pid": pid, "interval_s": _f32s(interval),
        "cpu_user": _f32s(user), "cpu_system": _f32s(system), "rss_bytes": rss,
        "threads": [m.threads for m in msgs], "ctx_switches_voluntary": voluntary,
        "ctx_switches_involuntary": involuntary, "run_queue_wait": _f32s(wait),
    }, check.process, rejected)


def _hosts(msgs: Sequence[ingest_pb2.HostReading], check: _Checker,
           rejected: Counter[tuple[str, str]]) -> Columns[HostReading]:
    """The valid host readings, checked a column at a time (see `_columns`)."""
    limits = check.limits
    msgs = list(msgs)
    time_ns = [m.time_unix_nanos for m in msgs]
    psi = {name: _optional_column(msgs, name) for name in _PSI}
    cpu, load = [m.cpu_pct for m in msgs], [m.load1 for m in msgs]
    available = [m.memory_available_bytes for m in msgs]
    total = [m.memory_total_bytes for m in msgs]
    valid = (all(_all_within(values, 0, 100) for values in psi.values()) and _all_within(cpu, 0, 100)
             and _all_within(available, 0, limits.max_memory_bytes)
             and _all_within(total, 0, limits.max_memory_bytes)
             and _all_within(load, 0, limits.max_load)
             and check.times(time_ns))
    return _columns("host", HostReading, msgs, valid, lambda: {
        "time_ns": time_ns, "cpu_pct": _f32s(cpu), "cpu_count": [m.cpu_count for m in msgs],
        "memory_available_bytes": available, "memory_total_bytes": total,
        "load1": _f32s(load), **{name: _f32s(values) for name, values in psi.items()},
    }, check.host, rejected)


def _gpus(msgs: Sequence[ingest_pb2.GpuReading], check: _Checker,
          rejected: Counter[tuple[str, str]]) -> Columns[GpuReading]:
    """The valid GPU readings, checked a column at a time (see `_columns`)."""
    limits = check.limits
    msgs = list(msgs)
    time_ns = [m.time_unix_nanos for m in msgs]
    index = [m.index for m in msgs]
    uuid, name = [m.uuid for m in msgs], [m.name for m in msgs]
    values = {field: _optional_column(msgs, field) for field in _GPU_OPTIONAL}
    valid = (all(_all_within(values[field], MIN_TEMPERATURE_C, MAX_TEMPERATURE_C)
                 for field in _GPU_TEMPERATURES)
             and all(_all_within(values[field], low, high)
                     for fields, low, high, _ in check.gpu_bounds for field in fields)
             and not any(r & ~KNOWN_CLOCK_EVENT_MASK
                         for r in values["clock_event_reasons"] if r is not None)
             and _all_within(values["performance_state"], 0, MAX_PERFORMANCE_STATE)
             and _all_within(index, 0, MAX_GPU_INDEX)
             and check.times(time_ns)
             and _all_texts(uuid, limits) and _all_texts(name, limits))
    return _columns("gpu", GpuReading, msgs, valid, lambda: {
        "time_ns": time_ns, "index": index, "uuid": uuid, "name": name,
        "replayed": [m.replayed for m in msgs],
        **values, **{field: _f32s(values[field]) for field in _GPU_TEMPERATURES},
    }, check.gpu, rejected)


def _keep(kind: str, convert: Callable[[Any], Any], records: Any,
          rejected: Counter[tuple[str, str]]) -> tuple[Any, ...]:
    kept = []
    for record in records:
        try:
            kept.append(convert(record))
        except _Reject as bad:
            rejected[(kind, bad.reason)] += 1
    return tuple(kept)


def decode_telemetry(
    batch: ingest_pb2.Batch, text: Callable[[int], str], now_ns: Nanos, limits: DecodeLimits,
) -> tuple[Telemetry, Rejections]:
    """The batch's valid records, and the count of dropped ones by (kind, reason).

    `text` resolves a string id; every id it is given has been checked to exist.
    Requests and the 1 Hz readings come as Columns, the other kinds as tuples of
    records.
    """
    check = _Checker(now_ns, limits)
    rejected: Counter[tuple[str, str]] = Counter()
    telemetry = Telemetry(
        gpu=_gpus(batch.gpu, check, rejected),
        process=_processes(batch.process, check, rejected),
        host=_hosts(batch.host, check, rejected),
        requests=_requests(batch.requests, check, text, rejected),
        events=_keep("event", check.event, batch.events, rejected),
        agent_stats=_keep("agent_stats", check.agent_stats, batch.agent_stats, rejected),
        engine=_keep("engine", check.engine, batch.engine, rejected),
    )
    return telemetry, dict(rejected)


def check_references(batch: ingest_pb2.Batch, n_strings: int, limits: DecodeLimits) -> None:
    """Whole-batch checks of the telemetry: record counts, and the requests' string ids.

    An undefined string id means the two ends disagree about the stream's dictionary,
    so it rejects the batch (InvalidBatchError) rather than one record.
    """
    for kind, records in (("gpu", batch.gpu), ("process", batch.process), ("host", batch.host),
                          ("request", batch.requests), ("event", batch.events),
                          ("agent_stats", batch.agent_stats), ("engine", batch.engine)):
        if len(records) > limits.max_records:
            raise BatchLimitError(
                f"{kind} records in one batch: {len(records)} exceeds the limit of "
                f"{limits.max_records}")
    requests = list(batch.requests)  # read three times: a list is faster than the field
    for field_name in ("route", "method", "source"):
        ids = list(map(attrgetter(field_name), requests))
        if ids and max(ids) >= n_strings:
            raise InvalidBatchError(
                f"request {field_name} string id {max(ids)} is not defined on this stream "
                f"({n_strings} known)")
