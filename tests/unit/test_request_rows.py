"""Requests decoded as columns (RequestRows): the column-wise validation keeps exactly the
records, and counts exactly the rejections, that the per-record checks do; the columns
read back as the records they hold."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import RequestRecord, Telemetry
from pyrometer.collector.ingest import validate
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.storage.batch import (
    NO_REQUESTS,
    DecodedBatch,
    FrameRows,
    RequestRows,
    Source,
    StackRows,
)
from pyrometer.collector.storage.duckdb.append import source_key, telemetry_tables
from pyrometer.collector.storage.duckdb.schema import FILE_TABLES
from pyrometer.proto import ingest_pb2
from support.ingest_builder import NOW_NS
from support.telemetry_builder import request

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


def _record_by_record(msgs: list[ingest_pb2.RequestRecord]
                      ) -> tuple[tuple[RequestRecord, ...], Counter[tuple[str, str]]]:
    check, rejected = validate._Checker(NOW_NS, LIMITS), Counter[tuple[str, str]]()
    kept = validate._keep("request", lambda m: check.request(m, STRINGS.__getitem__), msgs,
                          rejected)
    return kept, rejected


@settings(max_examples=400)
@given(st.lists(_request(), max_size=8))
def test_column_wise_keeps_what_record_by_record_keeps(msgs: list[ingest_pb2.RequestRecord]
                                                       ) -> None:
    rejected: Counter[tuple[str, str]] = Counter()
    rows = validate._requests(msgs, validate._Checker(NOW_NS, LIMITS), STRINGS.__getitem__,
                              rejected)
    kept, expected = _record_by_record(msgs)
    assert isinstance(rows, RequestRows)
    assert tuple(rows) == kept and rejected == expected


def test_a_batch_of_valid_requests_takes_the_column_path() -> None:
    msgs = [ingest_pb2.RequestRecord(end_unix_nanos=NOW_NS - 10**9, latency_nanos=5, route=1,
                                     method=2, status=200, source=3, trace_id=TRACE)] * 3
    check = validate._Checker(NOW_NS, LIMITS)
    check.request = None  # type: ignore[method-assign]  # the record path must not run
    rows = validate._requests(msgs, check, STRINGS.__getitem__, Counter())
    assert rows.route == ("/v1/predict",) * 3 and rows.trace_id == (TRACE,) * 3
    assert rows.ttfb_ns == (None,) * 3 and rows.chunk_gaps_us == ((),) * 3


def test_rows_read_back_as_records() -> None:
    records = (request(), request(2, route="/v1/embed", ttfb_ns=7, chunk_gaps_us=(3, 4),
                                  app_size=12, trace_id=TRACE))
    rows = RequestRows.of(records)
    assert rows == records and records == rows and rows != records[:1]
    assert rows[1] == records[1] and rows[-1] == records[-1] and rows[:1] == records[:1]
    assert list(rows) == list(records) and len(rows) == 2 and RequestRows.of(rows) is rows
    assert rows.chunk_gaps_us == ((), (3, 4)) and hash(rows) == hash(records)
    assert not NO_REQUESTS and NO_REQUESTS == ()


def test_columns_are_named_and_ordered_as_the_record_fields() -> None:
    # RequestRows builds records positionally: the two field lists must agree
    assert ([f.name for f in dataclasses.fields(RequestRows)]
            == [f.name for f in dataclasses.fields(RequestRecord)])


def test_columns_of_different_lengths_are_refused() -> None:
    columns: list[Any] = [(1,)] * len(dataclasses.fields(RequestRows))
    columns[3] = ()
    with pytest.raises(ValueError, match="different lengths"):
        RequestRows(*columns)


def test_a_requests_table_is_the_same_from_rows_or_from_records() -> None:
    records = (request(), request(2, ttfb_ns=7, chunk_gaps_us=(3, 4), chunk_gaps_dropped=2),
               request(3, app_size=12, trace_id=TRACE))

    def table(requests: Any) -> pa.Table:
        batch = DecodedBatch(Source("a", "svc"), 1, FrameRows.empty(), StackRows.empty(), None,
                             telemetry=Telemetry(requests=requests))
        return telemetry_tables([batch], FILE_TABLES, {source_key(batch.source): 1})["requests"]

    assert table(RequestRows.of(records)).equals(table(records))
    assert table(records).column("chunk_count").to_pylist() == [None, 5, None]

