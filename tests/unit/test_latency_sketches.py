"""Latency sketches on a real DuckDB store: a long series read from them has every
step's exact request count and each percentile within the sketch's 1% of quantile_cont
over the raw requests, whatever the compaction point, late requests included."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import RequestRecord, Telemetry
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb import series
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.duckdb.series import read_latency_quantile
from pyrometer.collector.storage.reads import QUANTILES, QuantilePoint, SeriesQuery
from pyrometer.collector.storage.retention import RetentionPolicy, delete_expired
from pyrometer.collector.storage.sketch import ALPHA, GAMMA, bin_of
from pyrometer.collector.storage.sketch import quantile as sketch_quantile
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder
from support.telemetry_builder import S, request

SPAN_S = 1800  # the requests cover half an hour
BOUND = ALPHA * (1 + 1e-9)
EVERYTHING = 10**18  # a sketch_from_ns no series reaches: the exact read


class Agent:
    def __init__(self) -> None:
        self.encoder = StreamEncoder()
        self.decoder = StreamDecoder()
        self.seq = 0

    def commit(self, store: DuckDBStore, requests: list[tuple[float, float, str | None]]) -> None:
        self.commit_records(store, [request(at, latency_ms=ms, route=route)
                                    for at, ms, route in requests])

    def commit_records(self, store: DuckDBStore, records: list[RequestRecord]) -> None:
        self.seq += 1
        batch: DecodedBatch = self.decoder.decode(
            self.encoder.batch(self.seq, None, telemetry=Telemetry(requests=tuple(records))), NOW_NS)
        store.commit([batch])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "sketches.duckdb")
    yield opened
    opened.close()


def read(store: DuckDBStore, query: SeriesQuery, quantile: str, sketch_from_ns: int
         ) -> tuple[list[QuantilePoint], dict[str | None, list[QuantilePoint]], str]:
    whole, routes, resolution = store._read(
        lambda cur: read_latency_quantile(cur, query, quantile, sketch_from_ns))
    return whole, {r.route: list(r.points) for r in routes}, resolution


def assert_close(got: list[QuantilePoint], exact: list[QuantilePoint]) -> None:
    assert [(p.start_ns, p.end_ns, p.count) for p in got] == [
        (p.start_ns, p.end_ns, p.count) for p in exact]
    for g, e in zip(got, exact, strict=True):
        assert abs(g.latency_ms - e.latency_ms) <= BOUND * e.latency_ms, (g, e)


traffic = st.lists(st.tuples(st.floats(0, SPAN_S - 0.001), st.floats(0.05, 20_000),
                             st.sampled_from(["/a", "/b", ""])), min_size=1, max_size=150)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic, traffic, st.integers(0, SPAN_S // 10 + 6), st.sampled_from([10, 30, 60, 600]),
       st.sampled_from(["p50", "p95", "p99", "max"]))
def test_a_sketched_series_has_the_exact_counts_and_quantiles_within_one_percent(
        first: list[tuple[float, float, str]], late: list[tuple[float, float, str]],
        compacted_steps: int, step_s: int, quantile: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBStore(Path(tmp) / "q.duckdb")
        try:
            agent = Agent()
            agent.commit(store, first)
            # the sketches reach some 10 s boundary; what comes after is read raw
            store.compact(BASE_NS + compacted_steps * 10 * S, max_span_ns=2 * SPAN_S * S)
            agent.commit(store, late)  # below the watermark or above it
            query = SeriesQuery("svc", BASE_NS, BASE_NS + SPAN_S * S + 7 * S, step_s * S)
            exact_whole, exact_routes, exact_from = read(store, query, quantile, EVERYTHING)
            whole, routes, resolution = read(store, query, quantile, 0)
            assert exact_from == "raw"
            assert resolution == ("10s" if compacted_steps else "raw")
            assert_close(whole, exact_whole)
            assert routes.keys() == exact_routes.keys()
            for route, points in routes.items():
                assert_close(points, exact_routes[route])
        finally:
            store.close()


# many requests in few steps and bins, so that a rank's bin sits anywhere in its coarse
# bin (series.COARSE_BINS) and a step's two ranks fall in one coarse bin or in two
# (ten neighbouring bins from 1 ms: 1.0201 is one bin's width, gamma); some requests
# have an empty route, a series of its own
dense = st.lists(st.tuples(st.floats(0, 119.999), st.sampled_from(
    [0.0, *(1.0201 ** k for k in range(10)), 40.0, 900.0]), st.sampled_from(["/a", "/b", ""])),
    min_size=1, max_size=120)
WHOLE = "the whole series"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dense, st.sampled_from([10, 30, 60]), st.sampled_from(["p50", "p95", "p99", "max"]))
def test_a_sketched_percentile_is_the_sketch_quantile_of_the_step_s_bins(
        requests: list[tuple[float, float, str | None]], step_s: int, quantile: str) -> None:
    """Exactly what sketch.quantile makes of each step's stored bins: the two-pass SQL
    (a coarse pass, then the fine bins of the coarse bins holding the ranks) finds the
    same bins as a plain walk over all of them."""
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBStore(Path(tmp) / "q.duckdb")
        try:
            Agent().commit(store, requests)
            store.compact(BASE_NS + 120 * S)
            query = SeriesQuery("svc", BASE_NS, BASE_NS + 120 * S, step_s * S)
            whole, routes, resolution = read(store, query, quantile, 0)
            assert resolution == "10s"
            stored = store._read(lambda cur: cur.execute(
                "SELECT bucket_ns, route, bin, count FROM latency_10s").fetchall())
            q = 1.0 if quantile == "max" else QUANTILES[quantile]
            for route, points in [(WHOLE, whole), *routes.items()]:
                steps: dict[int, list[tuple[int, int]]] = {}
                for bucket, r, bin_, n in stored:
                    if route in (WHOLE, r):
                        start = BASE_NS + (bucket - BASE_NS) // (step_s * S) * step_s * S
                        steps.setdefault(start, []).append((bin_, n))
                assert [p.start_ns for p in points] == sorted(steps)
                for p in points:
                    assert p.latency_ms == sketch_quantile(steps[p.start_ns], q) / 1e6, p
        finally:
            store.close()


def test_requests_that_end_below_the_watermark_join_the_sketches(store: DuckDBStore) -> None:
    agent = Agent()
    agent.commit(store, [(5, 10.0, "/a"), (15, 20.0, "/a")])
    report = store.compact(BASE_NS + 60 * S)
    assert report.caught_up and report.rows_written["latency_10s"] == 2
    agent.commit(store, [(7, 40.0, "/a"), (70, 30.0, "/a")])  # one late, one not yet
    assert store.table_rows()["latency_10s"] == 3
    query = SeriesQuery("svc", BASE_NS, BASE_NS + 80 * S, 10 * S)
    whole, _, resolution = read(store, query, "max", 0)
    assert resolution == "10s"
    assert [(p.start_ns - BASE_NS) // S for p in whole] == [0, 10, 70]
    assert [p.count for p in whole] == [2, 1, 1]
    # compacting on counts each request once
    assert store.compact(BASE_NS + 120 * S).rows_written["latency_10s"] == 1


def test_a_late_request_is_binned_at_the_resolution_compaction_reads(store: DuckDBStore) -> None:
    # a latency just past a bin's upper bound in nanoseconds, inside it in the whole
    # microseconds stored (schema.RESOLUTION): the late request joins the bin
    # compaction put its twin in
    bound = GAMMA ** bin_of(10_000_000)
    latency_ns = math.ceil(bound) + 1
    assert bin_of(latency_ns) != bin_of(latency_ns - latency_ns % 1000)
    agent = Agent()
    twins = [dataclasses.replace(request(at), latency_ns=latency_ns) for at in (5, 7)]
    agent.commit_records(store, twins[:1])
    assert store.compact(BASE_NS + 60 * S).caught_up
    agent.commit_records(store, twins[1:])  # late: its bucket is compacted
    assert store._con.execute("SELECT bin, sum(count)::BIGINT FROM latency_10s GROUP BY bin"
                              ).fetchall() == [(bin_of(latency_ns - latency_ns % 1000), 2)]


def test_a_series_off_the_10s_grid_or_filtered_reads_every_request(store: DuckDBStore) -> None:
    Agent().commit(store, [(5, 10.0, "/a")])
    store.compact(BASE_NS + 60 * S)
    for query in (SeriesQuery("svc", BASE_NS + S, BASE_NS + 60 * S, 10 * S),
                  SeriesQuery("svc", BASE_NS, BASE_NS + 60 * S, 5 * S),
                  SeriesQuery("svc", BASE_NS, BASE_NS + 60 * S, 10 * S, instance="pod-1")):
        assert read(store, query, "p99", 0)[2] == "raw"
    # and by default a series shorter than an hour does too: exact where it is cheap
    assert store.latency_quantile(SeriesQuery("svc", BASE_NS, BASE_NS + 60 * S, 10 * S),
                                  "p99")[2] == "raw"


def test_the_sketches_outlive_the_requests_until_the_rollups_retention(store: DuckDBStore) -> None:
    Agent().commit(store, [(m * 60 + 1, 10.0 + m, "/a") for m in range(60)])
    store.compact(BASE_NS + 3600 * S, max_span_ns=3600 * S)
    day = 86_400 * S
    policy = RetentionPolicy(day, chunk_rows=50, pause_s=0, rollup_retention_ns=30 * day)
    deleted = asyncio.run(delete_expired(store, BASE_NS + 3600 * S, policy))
    assert deleted == {"requests": 60}
    hour = SeriesQuery("svc", BASE_NS, BASE_NS + 3600 * S, 600 * S)
    whole, _, resolution = store.latency_quantile(hour, "max")
    assert resolution == "10s" and [p.count for p in whole] == [10] * 6
    assert abs(whole[-1].latency_ms - 69.0) <= BOUND * 69.0
    later = BASE_NS + 3600 * S + 30 * day
    deleted = asyncio.run(delete_expired(store, later - day, policy))
    assert deleted == {"latency_10s": 60}


def test_kept_steps_read_as_a_full_read_does_as_the_sketches_change(
        store: DuckDBStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A series read again takes its settled steps from the last read (steps_cache.py)
    and reads only the rest; through late requests, retention and a sliding window it
    answers exactly what a full read answers."""
    rng = random.Random(7)
    agent = Agent()
    agent.commit(store, [(rng.uniform(0, 299.9), rng.uniform(1, 90), rng.choice(["/a", "/b"]))
                         for _ in range(600)])
    store.compact(BASE_NS + 240 * S)  # steps from 240 s on read their requests
    kept = store._kept_steps
    assert kept is not None
    starts: list[int] = []
    sketch_rows = series._sketch_rows

    def spied(cur: Any, query: SeriesQuery, *args: Any) -> Any:
        starts.append((query.start_ns - BASE_NS) // S)
        return sketch_rows(cur, query, *args)
    monkeypatch.setattr(series, "_sketch_rows", spied)

    def both(start_s: int, end_s: int = 300) -> tuple[Any, Any]:
        query = SeriesQuery("svc", BASE_NS + start_s * S, BASE_NS + end_s * S, 30 * S)
        with_kept = store._read(lambda cur: read_latency_quantile(cur, query, "p95", 0, kept))
        full = store._read(lambda cur: read_latency_quantile(cur, query, "p95", 0))
        assert with_kept == full
        return with_kept, full

    first, _ = both(0)
    assert starts == [0, 0]  # nothing kept yet; then the full read
    starts.clear()
    both(0)
    assert starts == [240, 0]  # the eight settled steps came from the first read
    starts.clear()
    both(0, 200)  # a shorter one: its last whole step ends at 180 s
    assert starts == [180, 0]
    starts.clear()
    both(60)  # the window slid on by two steps; what was kept still reaches 240 s
    assert starts == [240, 60]
    agent.commit(store, [(31, 500.0, "/a")] * 5)  # late: below the watermark
    starts.clear()
    late, _ = both(0)
    assert starts == [0, 0] and late != first  # nothing kept was used
    deleted = store.delete_before(BASE_NS, rollup_cutoff_ns=BASE_NS + 70 * S)
    assert deleted["latency_10s"] > 0  # the buckets of 0-60 s
    starts.clear()
    after, _ = both(0)
    assert starts == [0, 0] and after != late
