"""Telemetry in a real DuckDB file: round trip per table, and the series read back."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.clock_events import CLOCK_EVENT_REASONS
from pyrometer.agent.shared.model import Event, SampleKey, Telemetry
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.append import repeated, telemetry_tables
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.duckdb.schema import (
    FILE_TABLES,
    HASHED_TABLES,
    arrow_schema,
    numbers_sources,
)
from pyrometer.collector.storage.reads import SeriesQuery
from pyrometer.collector.storage.store import BatchOutcome
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, stack
from support.telemetry_builder import MS, TRACE_ID, S, event, everything, gpu, host, process, request

MINUTE = (BASE_NS, BASE_NS + 60 * S)
MAIN = stack("main", "serve")
IDLE = stack("main", "wait")


class Agent:
    def __init__(self, **identity: object) -> None:
        self.encoder = StreamEncoder(**identity)  # type: ignore[arg-type]
        self.decoder = StreamDecoder()

    def batch(self, seq: int, telemetry: Telemetry, version: str | None = None,
              counts: dict[SampleKey, int] | None = None) -> DecodedBatch:
        raw = self.encoder.batch(seq, counts, telemetry=telemetry, version=version)
        return self.decoder.decode(raw, NOW_NS)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "telemetry.duckdb")
    yield opened
    opened.close()


def series(step_s: int = 10, **filters: str) -> SeriesQuery:
    return SeriesQuery("svc", *MINUTE, step_ns=step_s * S, **filters)


def test_every_table_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    store = DuckDBStore(path)
    report = store.commit([Agent(labels={"version": "v2"}).batch(
        1, everything(), counts={SampleKey(stack("main")): 1})])
    store.close()
    assert report.rows_written == {"samples": 1, "stacks": 1, "frames": 1, "gpu": 1,
                                   "process": 1, "host": 1, "requests": 2, "events": 1,
                                   "agent_stats": 1, "engine": 2}
    with duckdb.connect(str(path)) as con:
        identity = "time_ns, service, instance, host, agent_id, version, seq"
        for table in ("gpu", "process", "host", "requests", "events", "agent_stats", "engine"):
            columns = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
            assert ", ".join(columns[:7]) == identity
        assert con.execute("SELECT replayed, temperature_c, clock_event_reasons, gpu_index "
                           "FROM gpu").fetchall() == [(True, 71.5, 0, 0)]
        assert con.execute(
            "SELECT route, ttfb_ns, chunk_count, chunk_gap_max_us, chunk_gaps_us, "
            "chunk_gaps_dropped, app_size, source, trace_id FROM requests ORDER BY time_ns"
        ).fetchall() == [
            ("/v1/predict", None, None, None, [], 0, None, "middleware", None),
            ("/v1/predict", 3 * MS, 4, 250, [100, 250], 1, 42, "proxy", TRACE_ID)]
        assert con.execute("SELECT service, instance, version, seq, kind, previous_version, "
                           "attrs FROM events").fetchall() == [
            ("svc", "pod-1", "v2", 1, "deploy", "v1", '{"commit":"abc"}')]
        assert con.execute("SELECT psi_cpu_some, load1 FROM host").fetchall() == [(1.5, 2.5)]
        assert con.execute("SELECT cpu_user, rss_bytes FROM process").fetchall() == [
            (0.75, 2 * 2**30)]
        assert con.execute(
            "SELECT service, instance, cpu_cores, rss_bytes, queued_batches, spooled_batches, "
            "spool_bytes, dropped_batches, dropped_records, reconnects, pyspy_restarts "
            "FROM agent_stats").fetchall() == [
            ("svc", "pod-1", 0.125, 80 * 2**20, 3, 1, 4096, 2, 7, 1, 0)]
        assert con.execute("SELECT version, metric, value, interval_s, count, engine, model "
                           "FROM engine ORDER BY metric").fetchall() == [
            ("v2", "queue_time_s", 2.5, 5.0, 10, "vllm", "llama"),
            ("v2", "requests_waiting", 3.0, 5.0, 0, "vllm", "llama")]


def test_a_file_from_before_a_new_column_gains_it_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    store = DuckDBStore(path)
    store.commit([Agent().batch(1, Telemetry(requests=(request(1),)))])
    store.close()
    with duckdb.connect(str(path)) as con:  # the requests rows as they were before trace_id
        con.execute("ALTER TABLE requests_rows DROP COLUMN trace_id")
    store = DuckDBStore(path)
    store.commit([Agent().batch(2, Telemetry(requests=(request(2, trace_id=TRACE_ID),)))])
    store.close()
    with duckdb.connect(str(path)) as con:
        assert con.execute("SELECT trace_id FROM requests ORDER BY time_ns").fetchall() == [
            (None,), (TRACE_ID,)]


def test_a_retried_batch_stores_its_records_once(store: DuckDBStore) -> None:
    agent = Agent()
    batch = agent.batch(1, Telemetry(requests=(request(1), request(2)), events=(event(1),)))
    assert store.commit([batch]).outcomes == (BatchOutcome.STORED,)
    assert store.commit([batch]).outcomes == (BatchOutcome.DUPLICATE,)
    [point] = store.latency(series(step_s=60))
    assert point.count == 2
    assert len(store.events("svc", *MINUTE).events) == 1


def test_latency_counts_and_percentiles_per_step(store: DuckDBStore) -> None:
    agent = Agent()
    # step [0, 10 s): latencies 1..100 ms; step [10, 20 s): 7 requests of 5 ms, 2 of them 503
    first = tuple(request(i * 0.05, latency_ms=i + 1, request_bytes=i, ttfb_ns=MS)
                  for i in range(100))
    second = tuple(request(10 + i, latency_ms=5, status=503 if i < 2 else 200) for i in range(7))
    store.commit([agent.batch(1, Telemetry(requests=first)),
                  agent.batch(2, Telemetry(requests=second))])
    a, b = store.latency(series())
    assert (a.start_ns, a.end_ns, a.count, a.errors) == (BASE_NS, BASE_NS + 10 * S, 100, 0)
    assert a.rate_per_s == 10.0
    assert (a.latency_p50_ms, a.latency_max_ms) == (50.5, 100.0)
    assert a.latency_p99_ms == pytest.approx(99.01)
    assert a.request_bytes_p50 == 49.5 and a.ttfb_p50_ms == 1.0
    assert (b.count, b.errors, b.latency_p95_ms, b.ttfb_p50_ms) == (7, 2, 5.0, None)
    assert sum(p.count for p in store.latency(series(step_s=7))) == 107


def test_latency_filters_and_the_window_bounds(store: DuckDBStore) -> None:
    old = Agent(agent_id="a", instance="pod-a")
    new = Agent(agent_id="b", instance="pod-b")
    store.commit([
        old.batch(1, Telemetry(requests=(request(0), request(59.999, route="/health"))),
                  version="v1"),
        new.batch(1, Telemetry(requests=(request(5), request(60))), version="v2"),
    ])

    def count(**filters: str) -> int:
        return sum(p.count for p in store.latency(series(step_s=60, **filters)))

    assert count() == 3  # the request ending exactly at `to` is outside [from, to)
    assert count(version="v2") == 1 and count(instance="pod-a") == 2
    assert count(route="/health") == 1 and count(route="/nope") == 0
    # a last bucket cut short by `to` gives its rate over its own length
    [short] = store.latency(SeriesQuery("svc", BASE_NS, BASE_NS + 4 * S, 10 * S))
    assert (short.end_ns, short.rate_per_s) == (BASE_NS + 4 * S, 0.25)


def test_gpu_throttle_fractions_per_step(store: DuckDBStore) -> None:
    power, thermal = CLOCK_EVENT_REASONS["sw_power_cap"], CLOCK_EVENT_REASONS["hw_thermal_slowdown"]
    readings = (
        gpu(0, clock_event_reasons=power, temperature_c=70.0, replayed=True),
        gpu(1, clock_event_reasons=power | thermal, temperature_c=80.0),
        gpu(2, clock_event_reasons=0, temperature_c=70.0, sm_clock_max_mhz=2010),
        gpu(3, clock_event_reasons=thermal, temperature_c=80.0),
        gpu(4, clock_event_reasons=None, temperature_c=None),  # the driver did not say
        gpu(12, clock_event_reasons=None, index=1, power_mw=350_000),
        gpu(13, index=1),
    )
    store.commit([Agent().batch(1, Telemetry(gpu=readings))])
    first, idle = store.gpu(series())
    assert (first.gpu_index, first.start_ns, first.readings) == (0, BASE_NS, 5)
    fractions = dict(first.throttle)
    assert fractions["sw_power_cap"] == 0.5 and fractions["hw_thermal_slowdown"] == 0.5
    assert fractions["gpu_idle"] == 0.0 and set(fractions) == set(CLOCK_EVENT_REASONS)
    assert first.temperature_c == 75.0 and first.sm_clock_max_mhz == 2010
    assert first.power_w == 400.0 and first.power_limit_w == 700.0
    assert first.replayed and not idle.replayed
    assert (idle.gpu_index, idle.start_ns, idle.readings) == (1, BASE_NS + 10 * S, 2)
    assert dict(idle.throttle) == dict.fromkeys(CLOCK_EVENT_REASONS, 0.0)
    assert idle.power_w == 375.0


def test_gpu_step_without_reasons_has_no_fractions(store: DuckDBStore) -> None:
    store.commit([Agent().batch(1, Telemetry(gpu=(gpu(0, clock_event_reasons=None),)))])
    [point] = store.gpu(series())
    assert point.throttle == () and point.readings == 1


def test_process_and_host_series(store: DuckDBStore) -> None:
    store.commit([Agent().batch(1, Telemetry(
        process=(process(0, cpu_user=0.5, rss_bytes=100, run_queue_wait=0.25),
                 process(1, cpu_user=1.0, rss_bytes=300, run_queue_wait=0.5),
                 process(2, pid=101, threads=3)),
        host=(host(0, cpu_pct=40.0, memory_available_bytes=10, psi_io_some=None),
              host(1, cpu_pct=60.0, memory_available_bytes=5, psi_io_some=2.0)),
    ))])
    target, worker = store.process(series())
    assert (target.pid, target.readings, target.cpu_user, target.rss_bytes_max) == (100, 2, 0.75, 300)
    assert (target.ctx_switches_voluntary, target.ctx_switches_involuntary) == (200, 10)
    assert target.run_queue_wait == 0.375
    assert (worker.pid, worker.threads_max, worker.run_queue_wait) == (101, 3, None)  # an older agent
    [point] = store.host(series())
    assert (point.host, point.readings, point.cpu_pct) == ("host-1", 2, 50.0)
    assert point.memory_available_bytes_min == 5 and point.psi_io_some == 2.0
    assert store.process(series(instance="nope")) == []


def test_events_from_agents_and_from_the_api(store: DuckDBStore) -> None:
    store.commit([Agent().batch(1, Telemetry(events=(
        event(5, kind="restart", pid=101, previous_pid=100),
        event(6, version="v2", previous_version="v1"),
    )), version="v2")])
    posted = store.add_event("svc", Event(BASE_NS + 7 * S, "config", "v2", attrs=(("k", "v"),)))
    assert posted.agent_id == "api" and posted.attrs == (("k", "v"),)
    listing = store.events("svc", *MINUTE)
    assert [(e.kind, e.version, e.agent_id) for e in listing.events] == [
        ("restart", "v2", "agent-1"), ("deploy", "v2", "agent-1"), ("config", "v2", "api")]
    assert not listing.truncated and listing.events[2] == posted
    assert [e.kind for e in store.events("svc", *MINUTE, kind="deploy").events] == ["deploy"]
    assert store.events("other", *MINUTE).events == ()
    assert store.events("svc", BASE_NS + 6 * S, BASE_NS + 7 * S).events[0].kind == "deploy"


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 59.9), st.floats(0.1, 5000),
                          st.sampled_from(["/a", "/b", "/c", ""])), min_size=1, max_size=120),
       st.sampled_from([3, 10, 60]))
def test_the_detectors_quantile_series_is_the_latency_series_read_in_one_pass(
        requests: list[tuple[float, float, str]], step_s: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBStore(Path(tmp) / "q.duckdb")
        try:
            store.commit([Agent().batch(1, Telemetry(requests=tuple(
                request(at, latency_ms=ms, route=route) for at, ms, route in requests)))])
            fields = {"p50": "latency_p50_ms", "p95": "latency_p95_ms",
                      "p99": "latency_p99_ms", "max": "latency_max_ms"}
            for quantile, field in fields.items():
                whole, routes, resolution = store.latency_quantile(series(step_s), quantile)
                assert resolution == "raw"  # a minute: every request, exactly

                def expected(route: str | None = None, field: str = field
                             ) -> list[tuple[object, ...]]:
                    by = {} if route is None else {"route": route}
                    return [(p.start_ns, p.end_ns, p.count, getattr(p, field))
                            for p in store.latency(series(step_s, **by))]

                assert [(p.start_ns, p.end_ns, p.count, p.latency_ms) for p in whole] == expected()
                assert [(r.route, r.requests) for r in routes] == store.routes("svc", *MINUTE)
                for r in routes:
                    if r.route is not None:
                        assert [(p.start_ns, p.end_ns, p.count, p.latency_ms)
                                for p in r.points] == expected(r.route)
        finally:
            store.close()


def _answers(store: DuckDBStore) -> tuple[object, ...]:
    return (store.latency(series()), store.gpu(series()), store.process(series()),
            store.host(series()), store.request_records("svc", *MINUTE),
            store.gpu_readings("svc", *MINUTE), store.engine_readings("svc", *MINUTE),
            store.version_costs("svc", *MINUTE), store.events("svc", *MINUTE), store.table_rows(),
            store.profile("svc", *MINUTE), store.profile("svc", *MINUTE, version="v2"))


def _as_before_sources(path: Path) -> None:
    """Put a file in the layout from before sources: samples and each telemetry table a
    table of its own with the five source strings on every row and readings as DOUBLE."""
    with duckdb.connect(str(path)) as con:
        for table in ("samples", "gpu", "process", "host", "requests", "agent_stats", "engine"):
            con.execute(f"CREATE TABLE {table}_old AS SELECT * FROM {table}")
            con.execute(f"DROP VIEW {table}")
            con.execute(f"DROP TABLE {table}_rows")
            con.execute(f"ALTER TABLE {table}_old RENAME TO {table}")
        con.execute("DROP TABLE sources")
        # and, as then, nanoseconds below the units kept now (schema.RESOLUTION)
        con.execute("UPDATE requests SET time_ns = time_ns + 999_999, latency_ns = latency_ns + 999")
        con.execute("UPDATE gpu SET time_ns = time_ns + 999_999")


def _opens_migrated(path: Path, before: tuple[object, ...], agent: Agent) -> None:
    # an old file, opened: the answers it gave before, and a new batch stored beside them
    store = DuckDBStore(path)
    try:
        assert _answers(store) == before
        store.commit([agent.batch(2, Telemetry(requests=(request(30),)), version="v2")])
        assert sum(p.count for p in store.latency(series(step_s=60))) == 4
    finally:
        store.close()


def test_a_file_from_before_sources_is_numbered_and_answers_the_same(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    store = DuckDBStore(path)
    a, b = Agent(agent_id="a", instance="pod-a"), Agent(agent_id="b", instance="pod-b")
    store.commit([a.batch(1, everything(), version="v1", counts={SampleKey(MAIN): 3}),
                  b.batch(1, Telemetry(requests=(request(3),), gpu=(gpu(4, index=1),)), version="v2",
                          counts={SampleKey(MAIN): 2, SampleKey(IDLE, "w"): 1})])
    store.commit([a.batch(2, Telemetry(host=(host(20, cpu_pct=12.25),)), version="v2")])
    before = _answers(store)
    assert before[-2].total == 6 and before[-1].total == 3
    store.close()
    _as_before_sources(path)
    _opens_migrated(path, before, b)
    with duckdb.connect(str(path)) as con:
        assert con.execute("SELECT source_no, agent_id, version FROM sources ORDER BY 1").fetchall() == [
            (1, "a", "v1"), (2, "b", "v2"), (3, "a", "v2")]
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'gpu'").fetchone() == (1,)


def _as_before_source_labels(path: Path) -> None:
    """Put a file in the layout from before labels were a source's: sources the five
    strings alone, one number each, and every sample row its labels."""
    five = "service, instance, host, agent_id, version"
    with duckdb.connect(str(path)) as con:
        for table in ("samples", "gpu", "process", "host", "requests", "agent_stats", "engine"):
            con.execute(f"DROP VIEW {table}")
        con.execute(f"CREATE TABLE sources_old AS SELECT min(source_no) AS source_no, {five} "
                    "FROM sources GROUP BY ALL")
        renumber = (f"(SELECT s.source_no AS n, o.source_no AS o FROM sources AS s "
                    f"JOIN sources_old AS o USING ({five}))")
        for table in ("gpu", "process", "host", "requests", "agent_stats", "engine"):
            con.execute(f"UPDATE {table}_rows SET source_no = m.o FROM {renumber} AS m "
                        f"WHERE {table}_rows.source_no = m.n")
        con.execute("CREATE TABLE samples_old AS SELECT r.start_ns, m.o AS source_no, r.end_ns, "
                    "r.seq, s.labels, r.pid, r.thread, r.stack_no, r.count, r.rate_hz, "
                    f"r.idle_included FROM samples_rows AS r JOIN sources AS s USING (source_no) "
                    f"JOIN {renumber} AS m ON m.n = r.source_no ORDER BY r.rowid")
        for table in ("sources", "samples_rows"):
            con.execute(f"DROP TABLE {table}")
        con.execute("ALTER TABLE sources_old RENAME TO sources")
        con.execute("ALTER TABLE samples_old RENAME TO samples_rows")


def test_a_file_from_before_source_labels_numbers_each_label_set(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    store = DuckDBStore(path)
    a = Agent(agent_id="a", instance="pod-a", labels={"zone": "z1"})
    relabelled = Agent(agent_id="a", instance="pod-a", labels={"zone": "z2"})
    b = Agent(agent_id="b", instance="pod-b")
    store.commit([a.batch(1, everything(), version="v2", counts={SampleKey(MAIN): 3}),
                  b.batch(1, Telemetry(requests=(request(3),)), version="v2",
                          counts={SampleKey(IDLE, "w"): 1})])
    store.commit([relabelled.batch(2, Telemetry(host=(host(20),)), version="v2",
                                   counts={SampleKey(MAIN): 2})])
    before = (_answers(store), store.label_sets(*MINUTE))
    assert len(before[1]) == 3
    store.close()
    _as_before_source_labels(path)
    with duckdb.connect(str(path)) as con:
        assert con.execute("SELECT count(*) FROM sources").fetchone() == (2,)
    store = DuckDBStore(path)
    try:
        assert (_answers(store), store.label_sets(*MINUTE)) == before
        # a batch with labels seen before goes under the number the migration gave them
        store.commit([relabelled.batch(3, Telemetry(), version="v2", counts={SampleKey(MAIN): 1})])
    finally:
        store.close()
    with duckdb.connect(str(path)) as con:
        assert con.execute("SELECT source_no, agent_id, labels FROM sources ORDER BY 1").fetchall() == [
            (1, "a", '{"zone":"z1"}'), (2, "b", "{}"), (3, "a", '{"zone":"z2"}')]
        assert "labels" not in {row[0] for row in con.execute("DESCRIBE samples_rows").fetchall()}


def test_readings_keep_their_places_and_read_back_as_double(store: DuckDBStore) -> None:
    store.commit([Agent().batch(1, Telemetry(
        host=(host(0, cpu_pct=37.123456, load1=2.07, psi_cpu_some=0.51),),
        process=(process(0, cpu_user=0.123456),),
        gpu=(gpu(0, temperature_c=71.0),)))])
    cur = store._con.cursor()
    assert cur.execute("SELECT cpu_pct, load1, psi_cpu_some FROM host").fetchall() == [(37.12, 2.07, 0.51)]
    assert cur.execute("SELECT cpu_user, cpu_system FROM process").fetchall() == [(0.1235, 0.25)]
    assert cur.execute("SELECT typeof(temperature_c) FROM gpu").fetchall() == [("DOUBLE",)]
    cur.close()


def _fine_records() -> Telemetry:
    # times and spans with nanoseconds below the units kept (schema.RESOLUTION)
    return Telemetry(
        requests=(request(1.2345678, latency_ms=12.3456789, ttfb_ns=3 * MS + 1_999),),
        host=(host(2.0000019),), process=(process(3.0009999),), gpu=(gpu(4.5),))


def test_times_are_kept_to_the_millisecond_and_spans_to_the_microsecond(
        store: DuckDBStore) -> None:
    store.commit([Agent().batch(1, _fine_records())])
    [row] = store.request_records("svc", *MINUTE)
    assert (row.time_ns, row.latency_ns) == (BASE_NS + 1_234 * MS, 12_345_000)
    cur = store._con.cursor()
    assert cur.execute("SELECT time_ns, ttfb_ns FROM requests").fetchall() == [
        (BASE_NS + 1_234 * MS, 3_001_000)]
    assert [cur.execute(f"SELECT time_ns FROM {t}").fetchone() for t in ("host", "process", "gpu")] == [
        (BASE_NS + 2_000 * MS,), (BASE_NS + 3_000 * MS,), (BASE_NS + 4_500 * MS,)]
    # on disk, whole units under names that say so
    assert cur.execute("SELECT time_ms, latency_us, ttfb_us FROM requests_rows").fetchall() == [
        ((BASE_NS + 1_234 * MS) // MS, 12_345, 3_001)]
    cur.close()
    # retention compares the time as reads see it: a reading 1 ms past the cutoff stays
    assert store.delete_before(BASE_NS + 2_000 * MS)["host"] == 0
    assert store.delete_before(BASE_NS + 2_000 * MS + 1)["host"] == 1


def test_the_lake_layout_keeps_the_same_times_in_nanoseconds() -> None:
    # every backend answers alike: the lake's rows hold the kept times, in nanoseconds
    batch = Agent(agent_id="a").batch(1, _fine_records())
    rows = telemetry_tables([batch], HASHED_TABLES, {})
    assert rows["requests"].select(["time_ns", "latency_ns", "ttfb_ns"]).to_pylist() == [
        {"time_ns": BASE_NS + 1_234 * MS, "latency_ns": 12_345_000, "ttfb_ns": 3_001_000}]
    assert rows["host"].column("time_ns").to_pylist() == [BASE_NS + 2_000 * MS]


def _as_before_resolution(path: Path) -> None:
    """Put a file in the layout from before the kept resolution: times and spans in
    nanoseconds under their own names (with nanoseconds below the unit, as sent)."""
    with duckdb.connect(str(path)) as con:
        for rows, columns in FILE_TABLES.items():
            for c in columns:
                if c.reads_as:
                    con.execute(f"ALTER TABLE {rows} RENAME COLUMN {c.name} TO {c.reads_as}")
                    con.execute(f"UPDATE {rows} SET {c.reads_as} = {c.reads_as} * {c.unit} + "
                                f"{c.unit - 1}")


def test_a_file_from_before_the_resolution_keeps_its_times_in_units(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    store = DuckDBStore(path)
    a, b = Agent(agent_id="a", instance="pod-a"), Agent(agent_id="b", instance="pod-b")
    store.commit([a.batch(1, everything(), version="v1", counts={SampleKey(MAIN): 3}),
                  b.batch(1, _fine_records(), version="v2")])
    before = _answers(store)
    store.close()
    _as_before_resolution(path)
    with duckdb.connect(str(path)) as con:
        assert con.execute("SELECT latency_ns FROM requests_rows ORDER BY 1").fetchall()[0] == (
            10_000_999,)
    _opens_migrated(path, before, b)
    with duckdb.connect(str(path)) as con:
        assert con.execute("SELECT table_name, column_name FROM duckdb_columns() "
                           "WHERE suffix(column_name, '_ns') AND suffix(table_name, '_rows')"
                           ).fetchall() == [("samples_rows", "start_ns"), ("samples_rows", "end_ns")]


def test_the_lake_layout_keeps_the_strings_on_every_row_and_readings_as_sent() -> None:
    # several collectors write the lake: no per-writer source numbers there (schema.py)
    batch = Agent(agent_id="a").batch(1, Telemetry(host=(host(0, cpu_pct=37.125),)))
    assert not numbers_sources(HASHED_TABLES) and "sources" not in HASHED_TABLES
    [(name, rows)] = telemetry_tables([batch], HASHED_TABLES, {}).items()
    assert name == "host" and rows.schema == arrow_schema("host", HASHED_TABLES)
    assert rows.column("agent_id").to_pylist() == ["a"]
    assert rows.column("cpu_pct").to_pylist() == [37.125]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.text(max_size=5)), st.integers(1, 20)),
                max_size=8))
def test_repeated_expands_each_value_by_its_length(runs: list[tuple[str | None, int]]) -> None:
    # a batch's identity on each of its rows, expanded in Arrow
    values, lengths = [v for v, _ in runs], [n for _, n in runs]
    got = repeated(values, lengths, pa.string())
    assert got.type == pa.string()
    assert got.to_pylist() == [v for v, n in runs for _ in range(n)]
