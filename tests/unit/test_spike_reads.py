"""The reads one spike's analysis makes (storage/duckdb/records.py, engine.py): exact
counts, each instance's percentiles, the engine's readings summed per step and
deterministic samples, against the same computed in memory."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import Telemetry
from pyrometer.collector.analysis.evidence import EngineSample, engine_steps
from pyrometer.collector.analysis.localise import instance_latencies
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.reads import RequestRow, RequestSample, RequestTally
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder
from support.telemetry_builder import MS, S, engine_reading, gpu, request

STEP = 10 * S
SPIKE = (BASE_NS + 300 * S, BASE_NS + 360 * S)
BASELINE_START = BASE_NS + 60 * S  # not a whole number of steps before the spike
WINDOW = (BASELINE_START, SPIKE[1] + 60 * S)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "reads.duckdb")
    yield opened
    opened.close()


def commit(store: DuckDBStore, instance: str, telemetry: Telemetry, seq: int = 1) -> None:
    encoder = StreamEncoder(agent_id=f"agent-{instance}", instance=instance)
    store.commit([StreamDecoder().decode(encoder.batch(seq, telemetry=telemetry), NOW_NS)])


def fleet(store: DuckDBStore, rng: random.Random, per_instance: int) -> list[RequestRow]:
    """Requests of three instances over the window (and a little outside it), two routes
    and two versions; returns them as the store reads them back."""
    for n, instance in enumerate(("a", "b", "c")):
        records = tuple(
            request(at, latency_ms=rng.uniform(1, 400) * (3 if at >= 300 and n == 2 else 1),
                    route=rng.choice(("/a", "/b")), request_bytes=rng.randrange(10, 10_000),
                    app_size=rng.choice((None, rng.randrange(1, 4000))))
            for at in sorted(rng.uniform(30, 450) for _ in range(per_instance)))
        for version, part in (("1", records[::2]), ("2", records[1::2])):
            encoder = StreamEncoder(agent_id=f"agent-{instance}", instance=instance)
            store.commit([StreamDecoder().decode(
                encoder.batch(1 if version == "1" else 2, telemetry=Telemetry(requests=part),
                              version=version), NOW_NS)])
    return store.request_records("svc", BASE_NS, BASE_NS + 600 * S)


def tally_in_memory(rows: list[RequestRow], slow_ns: int) -> RequestTally:
    """What read_request_tally must give, computed the plain way."""
    rows = [r for r in rows if WINDOW[0] <= r.time_ns < WINDOW[1]]
    ended: dict[int, int] = {}
    began: dict[int, int] = {}
    for r in rows:
        ended[(r.time_ns - SPIKE[0]) // STEP] = ended.get((r.time_ns - SPIKE[0]) // STEP, 0) + 1
        start = r.time_ns - r.latency_ns
        began[(start - SPIKE[0]) // STEP] = began.get((start - SPIKE[0]) // STEP, 0) + 1
    inside = [r for r in rows if SPIKE[0] <= r.time_ns < SPIKE[1]]
    versions: dict[str, int] = {}
    for r in inside:
        versions[r.version] = versions.get(r.version, 0) + 1
    slow = [r.time_ns for r in inside if r.time_ns < SPIKE[0] + STEP and r.latency_ns > slow_ns]
    return RequestTally(len(rows), ended, began,
                        sum(1 for r in rows if BASELINE_START <= r.time_ns < SPIKE[0]),
                        len(inside), versions, min(slow, default=None),
                        sum(1 for r in rows if r.app_size is not None))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), per_instance=st.integers(0, 300),
       slow_ms=st.sampled_from([1.0, 150.0, 399.0, 5000.0]))
def test_the_tally_counts_exactly_what_memory_counts(tmp_path_factory: pytest.TempPathFactory,
                                                     seed: int, per_instance: int,
                                                     slow_ms: float) -> None:
    with closing(DuckDBStore(tmp_path_factory.mktemp("tally") / "t.duckdb")) as store:
        rows = fleet(store, random.Random(seed), per_instance)
        for route, instance in ((None, None), ("/a", None), (None, "c"), ("/b", "a")):
            chosen = [r for r in rows if route in (None, r.route) and instance in (None, r.instance)]
            got = store.request_tally("svc", *WINDOW, spike=SPIKE, baseline_start_ns=BASELINE_START,
                                      step_ns=STEP, slow_ns=round(slow_ms * MS), route=route,
                                      instance=instance)
            assert got == tally_in_memory(chosen, round(slow_ms * MS))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), q=st.sampled_from([0.5, 0.95, 0.99, 1.0]))
def test_each_instances_percentiles_are_those_memory_computes(
        tmp_path_factory: pytest.TempPathFactory, seed: int, q: float) -> None:
    with closing(DuckDBStore(tmp_path_factory.mktemp("inst") / "i.duckdb")) as store:
        rows = fleet(store, random.Random(seed), 120)
        baseline = (BASELINE_START, SPIKE[0])
        for route in (None, "/a"):
            chosen = [r for r in rows if route in (None, r.route)]
            got = store.instance_latency("svc", baseline, SPIKE, q, route=route)
            want = instance_latencies(chosen, baseline, SPIKE, q)
            assert [(g.instance, g.baseline_requests, g.spike_requests) for g in got] == \
                [(w.instance, w.baseline_requests, w.spike_requests) for w in want]
            for g, w in zip(got, want, strict=True):
                assert g.baseline_ms == pytest.approx(w.baseline_ms, rel=1e-12, nan_ok=True)
                assert g.spike_ms == pytest.approx(w.spike_ms, rel=1e-12, nan_ok=True)


def test_under_its_budget_every_request_is_read(store: DuckDBStore) -> None:
    rows = fleet(store, random.Random(1), 200)
    assert store.request_records("svc", BASE_NS, BASE_NS + 600 * S, budget=600) == rows
    assert store.request_records("svc", BASE_NS, BASE_NS + 600 * S, budget=10**6) == rows


def test_over_its_budget_a_sample_repeats_and_thins_every_part_alike(store: DuckDBStore) -> None:
    rows = fleet(store, random.Random(2), 3000)  # 9,000 requests
    window = (BASE_NS, BASE_NS + 600 * S)
    sample = store.request_records("svc", *window, budget=1500)
    assert store.request_records("svc", *window, budget=1500) == sample  # deterministic
    assert set(sample) <= set(rows)
    assert sample == sorted(sample, key=lambda r: r.time_ns)
    assert 1500 * 0.85 <= len(sample) <= 1500 * 1.15
    # kept independently of time and instance: each part keeps about a sixth
    for part in (lambda r: r.time_ns < SPIKE[0], lambda r: r.time_ns >= SPIKE[0],
                 lambda r: r.instance == "c"):
        share = sum(1 for r in sample if part(r)) / sum(1 for r in rows if part(r))
        assert 1 / 6 * 0.75 <= share <= 1 / 6 * 1.25
    # the filters apply before the budget: one instance's sample is of its own rows
    mine = store.request_records("svc", *window, instance="c", budget=1500)
    assert {r.instance for r in mine} == {"c"} and 1500 * 0.85 <= len(mine) <= 1500 * 1.15


def as_samples(rows: list[RequestRow], unit: str) -> list[RequestSample]:
    """What request_samples must give for `rows`, converted the plain way."""
    return [RequestSample(r.time_ns, r.latency_ns / 1_000_000,
                          (None if r.app_size is None else float(r.app_size))
                          if unit == "app size" else float(r.request_bytes), r.version)
            for r in rows]


@pytest.mark.parametrize("unit", ["app size", "bytes"])
@pytest.mark.parametrize(("route", "instance", "budget"), [
    (None, None, None), (None, None, 1500), ("/a", None, 700), (None, "c", 500),
])
def test_request_samples_are_the_records_rows_in_the_analysis_shape(
        store: DuckDBStore, unit: str, route: str | None, instance: str | None,
        budget: int | None) -> None:
    fleet(store, random.Random(3), 1500)  # 4,500 requests: each budget samples
    window = (BASE_NS, BASE_NS + 600 * S)
    rows = store.request_records("svc", *window, route=route, instance=instance, budget=budget)
    got = store.request_samples("svc", *window, unit=unit, route=route, instance=instance,
                                budget=budget)
    # the same rows in the same order; times are kept to the millisecond, so some
    # requests end together and both reads must break the ties alike
    if budget is None and route is None and instance is None:
        assert len({r.time_ns for r in rows}) < len(rows)
    assert got == as_samples(rows, unit)
    assert all(type(s.latency_ms) is float for s in got)
    if budget is not None:
        assert len(rows) < 4500


def test_request_samples_refuse_an_unknown_unit(store: DuckDBStore) -> None:
    fleet(store, random.Random(4), 10)
    with pytest.raises(ValueError, match="unit 'tokens'"):
        store.request_samples("svc", BASE_NS, BASE_NS + 600 * S, unit="tokens")


def test_gpu_readings_are_sampled_alike_and_filter_by_instance(store: DuckDBStore) -> None:
    for instance in ("a", "b"):
        commit(store, instance, Telemetry(gpu=tuple(
            gpu(i * 0.25, index=i % 2, uuid=f"GPU-{i % 2}") for i in range(2000))))
    window = (BASE_NS, BASE_NS + 600 * S)
    every = store.gpu_readings("svc", *window)
    assert len(every) == 4000
    assert store.gpu_readings("svc", *window, budget=4000) == every
    sample = store.gpu_readings("svc", *window, budget=800)
    assert store.gpu_readings("svc", *window, budget=800) == sample
    assert set(sample) <= set(every) and 800 * 0.85 <= len(sample) <= 800 * 1.15
    assert {g.instance for g in store.gpu_readings("svc", *window, instance="b")} == {"b"}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), same_times=st.booleans())
def test_engine_steps_sum_what_memory_sums(tmp_path_factory: pytest.TempPathFactory, seed: int,
                                           same_times: bool) -> None:
    rng = random.Random(seed)
    readings = []
    for instance in ("a", "b"):
        for k in range(rng.randrange(0, 60)):
            at = k * 7.5 + (0 if same_times else rng.uniform(0, 5))
            for model in ("llama", "mistral")[:rng.randrange(1, 3)]:
                for metric, count in (("queue_time_s", rng.choice((0, 3, 40))),
                                      ("requests_running", 0), ("preemptions", 0)):
                    readings.append(EngineSample(
                        BASE_NS + round(at * S), metric, rng.choice((0.0, 0.5, rng.uniform(0, 90))),
                        count, "vllm", model, instance))
    with closing(DuckDBStore(tmp_path_factory.mktemp("engine") / "e.duckdb")) as store:
        for instance in ("a", "b"):
            mine = tuple(r for r in readings if r.instance == instance)
            if mine:
                commit(store, instance, Telemetry(engine=tuple(
                    engine_reading((r.time_ns - BASE_NS) / S, r.metric, value=r.value,
                                   count=r.count, model=r.model) for r in mine)))
        for instance in (None, "b"):
            got = store.engine_steps("svc", *WINDOW, origin_ns=SPIKE[0], step_ns=STEP,
                                     instance=instance)
            want = engine_steps((r for r in readings if instance in (None, r.instance)
                                 and WINDOW[0] <= r.time_ns < WINDOW[1]), SPIKE[0], STEP)
            assert [(g.step, g.metric, g.engine, g.count, g.scrapes) for g in got] == \
                [(w.step, w.metric, w.engine, w.count, w.scrapes) for w in want]
            for g, w in zip(got, want, strict=True):
                for field in ("total", "counted_total", "scrape_highest", "highest"):
                    assert getattr(g, field) == pytest.approx(getattr(w, field), rel=1e-9), field


def test_reads_cut_by_a_limit_break_millisecond_ties_alike_whatever_the_order_stored(
        tmp_path: Path) -> None:
    # requests that ended in one millisecond with one latency (times are kept to the
    # millisecond): the slowest few and the latest few are the same rows, in the same
    # order, however their batches came in
    twins = [("ab"[n % 2], request(100 + n * 0.0001, latency_ms=250.0, route=f"/r{n % 3}",
                                   request_bytes=n)) for n in range(8)]
    answers = []
    for name, order in (("forward", twins), ("backward", twins[::-1])):
        with closing(DuckDBStore(tmp_path / f"{name}.duckdb")) as store:
            for n, (instance, record) in enumerate(order):
                commit(store, instance, Telemetry(requests=(record,)), seq=n + 1)
            window = (BASE_NS, BASE_NS + 600 * S)
            answers.append((store.slowest_requests("svc", *window, limit=3),
                            store.request_records("svc", *window)))
    assert len({r.time_ns for r in answers[0][1]}) == 1
    assert answers[0] == answers[1]
