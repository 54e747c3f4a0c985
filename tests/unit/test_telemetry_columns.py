"""Requests and 1 Hz readings decoded as columns (Columns): the column-wise validation
keeps exactly the records, and counts exactly the rejections, that the per-record checks
do; the columns read back as the records they hold."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.clock_events import KNOWN_CLOCK_EVENT_MASK
from pyrometer.agent.shared.model import (
    GpuReading,
    HostReading,
    ProcessReading,
    RequestRecord,
    Telemetry,
)
from pyrometer.collector.ingest import validate
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.storage.batch import Columns, DecodedBatch, FrameRows, Source, StackRows
from pyrometer.collector.storage.duckdb.append import source_key, telemetry_tables
from pyrometer.collector.storage.duckdb.schema import FILE_TABLES
from pyrometer.proto import ingest_pb2
from support.ingest_builder import NOW_NS
from support.telemetry_builder import gpu, host, process, request

STRINGS = ["", "/v1/predict", "POST", "middleware", "proxy"]
LIMITS = DecodeLimits(max_chunk_gaps=3)
TRACE = "0af7651916cd43dd8448eb211c80319c"


def _edges(low: int, high: int) -> st.SearchStrategy[int]:
    # mostly in bounds, sometimes at them, sometimes one past: the fast path's min and
    # max must fail exactly where a record's check does
    return st.one_of(st.integers(low, high), st.sampled_from([low, high, low - 1, high + 1]))


@st.composite
def _request(draw: st.DrawFn) -> ingest_pb2.RequestRecord:
    msg = ingest_pb2.RequestRecord(
        end_unix_nanos=draw(st.one_of(st.just(NOW_NS - 10**9), _edges(
            validate.MIN_TIME_NS, NOW_NS + LIMITS.max_future_ns))),
        latency_nanos=draw(_edges(0, LIMITS.max_latency_ns)),
        request_bytes=draw(_edges(0, LIMITS.max_payload_bytes).filter(lambda v: v >= 0)),
        response_bytes=draw(_edges(0, LIMITS.max_payload_bytes).filter(lambda v: v >= 0)),
        route=draw(st.integers(0, len(STRINGS) - 1)),
        method=draw(st.integers(0, len(STRINGS) - 1)),
        status=draw(_edges(0, validate.MAX_HTTP_STATUS).filter(lambda v: v >= 0)),
        chunk_gaps_us=draw(st.lists(st.integers(0, 2**32 - 1), max_size=4)),
        chunk_gaps_dropped=draw(st.integers(0, 5)),
        pid=draw(_edges(0, 2**31 - 1).filter(lambda v: -(2**31) <= v < 2**31)),
        source=draw(st.integers(0, len(STRINGS) - 1)),
    )
    if draw(st.booleans()):
        msg.ttfb_nanos = draw(_edges(0, LIMITS.max_latency_ns))
    if draw(st.booleans()):
        msg.app_size = draw(st.integers(0, 2**64 - 1))
    if draw(st.booleans()):
        msg.trace_id = draw(st.one_of(
            st.just(TRACE), st.just(TRACE.upper()), st.just(TRACE[:-1]), st.just(""),
            st.text(alphabet="0123456789abcdefg", min_size=31, max_size=33)))
    return msg


def _same_as_record_by_record(kind: str, columns: Any, record: Any, msgs: list[Any]) -> None:
    """`columns(msgs, check, rejected)` keeps what `record(check)` keeps, one at a time,
    and counts the same rejections."""
    rejected: Counter[tuple[str, str]] = Counter()
    rows = columns(msgs, validate._Checker(NOW_NS, LIMITS), rejected)
    check, expected = validate._Checker(NOW_NS, LIMITS), Counter[tuple[str, str]]()
    kept = validate._keep(kind, record(check), msgs, expected)
    assert isinstance(rows, Columns)
    assert tuple(rows) == kept and rejected == expected


@settings(max_examples=400)
@given(st.lists(_request(), max_size=8))
def test_requests_column_wise_keep_what_record_by_record_keeps(
        msgs: list[ingest_pb2.RequestRecord]) -> None:
    _same_as_record_by_record(
        "request", lambda m, c, r: validate._requests(m, c, STRINGS.__getitem__, r),
        lambda check: lambda m: check.request(m, STRINGS.__getitem__), msgs)


def test_a_batch_of_valid_requests_takes_the_column_path() -> None:
    msgs = [ingest_pb2.RequestRecord(end_unix_nanos=NOW_NS - 10**9, latency_nanos=5, route=1,
                                     method=2, status=200, source=3, trace_id=TRACE)] * 3
    check = validate._Checker(NOW_NS, LIMITS)
    check.request = None  # type: ignore[method-assign]  # the record path must not run
    rows = validate._requests(msgs, check, STRINGS.__getitem__, Counter())
    assert rows.column("route") == ("/v1/predict",) * 3 and rows.column("trace_id") == (TRACE,) * 3
    assert rows.column("ttfb_ns") == (None,) * 3 and rows.column("chunk_gaps_us") == ((),) * 3


def _float(low: float, high: float) -> st.SearchStrategy[float]:
    return st.one_of(st.floats(low, high), st.sampled_from([low, high, 71.3]))


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _one_bad(message: type[Any], good: dict[str, st.SearchStrategy[Any]],
             bad: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    """Messages with good values, half of them with one field made bad: a column-wise
    check that let one bad value through would keep that record, and be seen."""
    @st.composite
    def build(draw: st.DrawFn) -> Any:
        values = {name: draw(strategy) for name, strategy in good.items()}
        spoilt = draw(st.one_of(st.none(), st.sampled_from(sorted(bad))))
        if spoilt is not None:
            values[spoilt] = draw(st.sampled_from(bad[spoilt]))
        # None leaves an optional field unset
        return message(**{name: value for name, value in values.items() if value is not None})
    return build()


NAN = float("nan")
_TIME = st.just(NOW_NS - 10**9)
_BAD_TIME = [validate.MIN_TIME_NS - 1, NOW_NS + LIMITS.max_future_ns + 1]
_CORES, _MEMORY = LIMITS.max_cpu_cores, LIMITS.max_memory_bytes

_process = _one_bad(ingest_pb2.ProcessReading, {
    "time_unix_nanos": _TIME, "pid": st.sampled_from([0, 7, 2**31 - 1]),
    "interval_s": _float(1e-3, 3600), "cpu_user": _float(0, _CORES),
    "cpu_system": _float(0, _CORES), "rss_bytes": st.sampled_from([0, _MEMORY]),
    "threads": st.integers(0, 100), "ctx_switches_voluntary": st.integers(0, 10),
    "ctx_switches_involuntary": st.integers(0, 10), "run_queue_wait": _maybe(_float(0, _CORES)),
}, {"time_unix_nanos": _BAD_TIME, "pid": [-1], "interval_s": [0.0, 3601.0, NAN],
    "cpu_user": [-0.5, NAN, _CORES + 1], "cpu_system": [NAN], "rss_bytes": [_MEMORY + 1],
    "ctx_switches_voluntary": [validate.MAX_INTERVAL_COUNT + 1],
    "ctx_switches_involuntary": [validate.MAX_INTERVAL_COUNT + 1],
    "run_queue_wait": [-1.0, NAN]})

_host = _one_bad(ingest_pb2.HostReading, {
    "time_unix_nanos": _TIME, "cpu_pct": _float(0, 100), "cpu_count": st.integers(1, 64),
    "memory_available_bytes": st.sampled_from([0, _MEMORY]),
    "memory_total_bytes": st.sampled_from([_MEMORY, 2**30]), "load1": _float(0, LIMITS.max_load),
    **{name: _maybe(_float(0, 100)) for name in validate._PSI},
}, {"time_unix_nanos": _BAD_TIME, "cpu_pct": [100.5, NAN], "memory_available_bytes": [_MEMORY + 1],
    "memory_total_bytes": [_MEMORY + 1], "load1": [-1.0, LIMITS.max_load + 1, NAN],
    **{name: [-0.5, 101.0, NAN] for name in validate._PSI}})

_GPU_LIMITS = {**{name: (0, 100) for name in validate._GPU_PERCENTS},
               **{name: (0, _MEMORY) for name in validate._GPU_MEMORY},
               **{name: (0, validate.MAX_CLOCK_MHZ) for name in validate._GPU_CLOCKS},
               **{name: (0, validate.MAX_POWER_MW) for name in validate._GPU_POWER}}
_gpu = _one_bad(ingest_pb2.GpuReading, {
    "time_unix_nanos": _TIME, "index": st.sampled_from([0, 3, validate.MAX_GPU_INDEX]),
    "uuid": st.just("GPU-1"), "name": st.just("H100"), "replayed": st.booleans(),
    **{name: _maybe(_float(validate.MIN_TEMPERATURE_C, validate.MAX_TEMPERATURE_C))
       for name in validate._GPU_TEMPERATURES},
    **{name: _maybe(st.sampled_from(bounds)) for name, bounds in _GPU_LIMITS.items()},
    "clock_event_reasons": _maybe(st.sampled_from([0, KNOWN_CLOCK_EVENT_MASK])),
    "performance_state": _maybe(st.sampled_from([0, 15])),
}, {"time_unix_nanos": _BAD_TIME, "index": [validate.MAX_GPU_INDEX + 1],
    "uuid": ["u" * (LIMITS.max_string_bytes + 1)], "name": ["é" * LIMITS.max_string_bytes],
    **{name: [-51.0, 201.0, NAN] for name in validate._GPU_TEMPERATURES},
    **{name: [high + 1] for name, (_, high) in _GPU_LIMITS.items()},
    "clock_event_reasons": [1 << 40], "performance_state": [-1, 16]})


@settings(max_examples=300)
@given(st.lists(_process, max_size=4))
def test_process_readings_column_wise_keep_what_record_by_record_keeps(msgs: list[Any]) -> None:
    _same_as_record_by_record("process", validate._processes, lambda c: c.process, msgs)


@settings(max_examples=300)
@given(st.lists(_host, max_size=4))
def test_host_readings_column_wise_keep_what_record_by_record_keeps(msgs: list[Any]) -> None:
    _same_as_record_by_record("host", validate._hosts, lambda c: c.host, msgs)


@settings(max_examples=300)
@given(st.lists(_gpu, max_size=4))
def test_gpu_readings_column_wise_keep_what_record_by_record_keeps(msgs: list[Any]) -> None:
    _same_as_record_by_record("gpu", validate._gpus, lambda c: c.gpu, msgs)


def test_readings_come_back_as_the_agent_wrote_them() -> None:
    # the column path rounds float32 values as the record path does (71.3, not 71.30000305)
    msg = ingest_pb2.HostReading(time_unix_nanos=NOW_NS - 10**9, cpu_pct=71.3, cpu_count=8,
                                 load1=0.1, psi_io_some=2.5)
    rows = validate._hosts([msg], validate._Checker(NOW_NS, LIMITS), Counter())
    assert rows.column("cpu_pct") == (71.3,) and rows.column("load1") == (0.1,)
    assert rows.column("psi_io_some") == (2.5,) and rows.column("psi_cpu_some") == (None,)


def test_columns_read_back_as_records() -> None:
    records = (request(), request(2, route="/v1/embed", ttfb_ns=7, chunk_gaps_us=(3, 4),
                                  app_size=12, trace_id=TRACE))
    rows = Columns.of(RequestRecord, records)
    assert rows == records and records == rows and rows != records[:1]
    assert rows[1] == records[1] and rows[-1] == records[-1] and rows[:1] == records[:1]
    assert list(rows) == list(records) and len(rows) == 2
    assert Columns.of(RequestRecord, rows) is rows
    assert rows.column("chunk_gaps_us") == ((), (3, 4)) and hash(rows) == hash(records)
    empty = Columns.of(GpuReading, ())
    assert not empty and empty == () and list(empty) == []
    readings = (gpu(1), gpu(2, temperature_c=80.0))
    assert Columns.of(GpuReading, readings) == readings


def test_columns_built_in_any_order_read_in_the_record_s_field_order() -> None:
    names = [f.name for f in dataclasses.fields(ProcessReading)]
    record = process()
    rows = Columns(ProcessReading, {name: [getattr(record, name)] for name in reversed(names)})
    assert rows[0] == record


def test_columns_that_are_not_the_fields_or_not_as_long_are_refused() -> None:
    record = host()
    columns: dict[str, Any] = {f.name: [getattr(record, f.name)]
                               for f in dataclasses.fields(HostReading)}
    with pytest.raises(ValueError, match="not the fields"):
        Columns(HostReading, columns | {"extra": [1]})
    with pytest.raises(ValueError, match="different lengths"):
        Columns(HostReading, columns | {"load1": [1.0, 2.0]})


def test_columns_as_fields_and_back_are_the_same_records() -> None:
    records = (request(), request(2, route="/v1/embed", ttfb_ns=7, chunk_gaps_us=(3, 4)))
    rows = Columns.of(RequestRecord, records)
    assert Columns.of_fields(RequestRecord, rows.as_fields()) == records
    fields = rows.as_fields()
    with pytest.raises(ValueError, match="are not the"):  # one field short
        Columns.of_fields(RequestRecord, fields[:-1])
    with pytest.raises(ValueError, match="lengths"):  # one column a record short
        Columns.of_fields(RequestRecord, (fields[0][:1], *fields[1:]))


def test_a_requests_table_is_the_same_from_rows_or_from_records() -> None:
    records = (request(), request(2, ttfb_ns=7, chunk_gaps_us=(3, 4), chunk_gaps_dropped=2),
               request(3, app_size=12, trace_id=TRACE))

    def table(requests: Any) -> pa.Table:
        batch = DecodedBatch(Source("a", "svc"), 1, FrameRows.empty(), StackRows.empty(), None,
                             telemetry=Telemetry(requests=requests))
        return telemetry_tables([batch], FILE_TABLES, {source_key(batch.source): 1})["requests"]

    assert table(Columns.of(RequestRecord, records)).equals(table(records))
    assert table(records).column("chunk_count").to_pylist() == [None, 5, None]

