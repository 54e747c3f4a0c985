"""Profile rollups on a real DuckDB store: a read that takes whole minutes and hours from
the rollups gives exactly the raw answer, for any data, compaction point and window."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey, Stack
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.storage.compaction import (
    CompactionPolicy,
    compact_until,
    run_compaction,
)
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.duckdb.rollups import HOUR_NS, LEVELS, MINUTE_NS, plan_read
from pyrometer.collector.storage.retention import RetentionPolicy, delete_expired
from support.ingest_builder import BASE_NS, StreamEncoder, stack

S = NANOS_PER_SECOND
T0 = BASE_NS // HOUR_NS * HOUR_NS  # an hour boundary, so buckets line up with the data
STACKS = (stack("main", "serve"), stack("main", "serve", "forward"), stack("main", "idle"))
THREADS = ("MainThread", "worker")
AGENTS = (("a", "pod-a"), ("b", "pod-b"))
SPAN_S = 3 * 3600  # the data covers three hours and a bit


@dataclass(frozen=True)
class Window:
    agent: int
    start_s: int  # from T0
    length_s: int
    version: str
    counts: tuple[tuple[int, int, int], ...]  # (stack, thread, count)

    @property
    def midpoint_ns(self) -> int:
        start = T0 + self.start_s * S
        return start + self.length_s * S // 2


windows = st.builds(
    Window,
    agent=st.integers(0, len(AGENTS) - 1),
    start_s=st.integers(-30, SPAN_S),
    length_s=st.sampled_from((1, 10, 10, 10, 59, 61, 120)),
    version=st.sampled_from(("v1", "v2")),
    counts=st.lists(st.tuples(st.integers(0, len(STACKS) - 1), st.integers(0, 1),
                              st.integers(1, 50)), min_size=1, max_size=4,
                    unique_by=lambda c: (c[0], c[1])).map(tuple),
)
# an offset from T0 in seconds: whole hours and minutes and ragged ones alike
instants = st.one_of(st.integers(-60, SPAN_S + 60), st.integers(-1, 4).map(lambda h: h * 3600),
                     st.integers(-1, 200).map(lambda m: m * 60))


class Agents:
    """One encoder per agent; every batch gets its agent's next seq."""

    def __init__(self) -> None:
        self.encoders = [StreamEncoder(agent_id=a, instance=i) for a, i in AGENTS]
        self.decoders = [StreamDecoder() for _ in AGENTS]
        self.seqs = [0 for _ in AGENTS]

    def commit(self, store: DuckDBStore, *windows: Window) -> None:
        """The windows' batches in one commit, as the ingest server's group commit does."""
        batches = []
        for window in windows:
            n = window.agent
            self.seqs[n] += 1
            counts = {SampleKey(STACKS[s], THREADS[t]): c for s, t, c in window.counts}
            start = T0 + window.start_s * S
            raw = self.encoders[n].batch(self.seqs[n], counts, start_ns=start,
                                         end_ns=start + window.length_s * S, version=window.version)
            batches.append(self.decoders[n].decode(raw, start))
        store.commit(batches)


def expected(stored: list[Window], start_s: int, end_s: int, version: str | None,
             thread: str | None, instance: str | None) -> dict[Stack, int]:
    out: Counter[Stack] = Counter()
    for w in stored:
        if not T0 + start_s * S <= w.midpoint_ns < T0 + end_s * S:
            continue
        if version not in (None, w.version) or instance not in (None, AGENTS[w.agent][1]):
            continue
        for s, t, c in w.counts:
            if thread in (None, THREADS[t]):
                out[STACKS[s]] += c
    return dict(out)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "rollups.duckdb")
    yield opened
    opened.close()


@settings(max_examples=300, deadline=None)
@given(start=st.integers(-10**12, 10**12), length=st.integers(-10, 10**13),
       done_m=st.integers(-10**12, 10**13), hours_behind=st.integers(0, 5))
def test_a_plan_covers_the_window_once_with_whole_buckets_below_the_watermarks(
        start: int, length: int, done_m: int, hours_behind: int) -> None:
    done = {"1m": done_m // MINUTE_NS * MINUTE_NS}
    done["1h"] = done["1m"] // HOUR_NS * HOUR_NS - hours_behind * HOUR_NS
    plan = plan_read(start, start + length, done)
    pieces = sorted([(lo, hi) for _, lo, hi in plan.rollups] + list(plan.raw))
    if length <= 0:
        assert pieces == []
        return
    assert pieces[0][0] == start and pieces[-1][1] == start + length
    for (_, hi), (lo, _) in zip(pieces, pieces[1:], strict=False):
        assert hi == lo  # no gap, no overlap
    for level, lo, hi in plan.rollups:
        assert lo % level.length_ns == 0 and hi % level.length_ns == 0 and lo < hi
        assert hi <= done[level.name]
    assert plan.resolution == (plan.rollups[0][0].name if plan.rollups else "raw")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rollup_answers_equal_raw_answers(data: st.DataObject) -> None:
    # one in-memory store per example: windows committed in a random order (so some come
    # after compaction has passed their minute), compactions at random points between them
    store = DuckDBStore(":memory:")
    try:
        agents, stored = Agents(), []
        for window in data.draw(st.lists(windows, min_size=1, max_size=25), "windows"):
            agents.commit(store, window)
            stored.append(window)
            if data.draw(st.integers(0, 4), "compact?") == 0:
                until = T0 + data.draw(instants, "until") * S
                span = data.draw(st.sampled_from((20 * MINUTE_NS, 6 * HOUR_NS)), "span")
                while not store.compact(until, max_span_ns=span).caught_up:
                    pass
        for _ in range(4):
            a, b = sorted((data.draw(instants, "from"), data.draw(instants, "to")))
            version = data.draw(st.sampled_from((None, "v1", "v2")), "version")
            thread = data.draw(st.sampled_from((None, *THREADS)), "thread")
            instance = data.draw(st.sampled_from((None, "pod-a")), "instance")
            got = store.profile("svc", T0 + a * S, T0 + b * S, version=version, thread=thread,
                                instance=instance)
            assert dict(got.samples) == expected(stored, a, b, version, thread, instance)
            if instance is not None:
                assert got.resolution == "raw"
    finally:
        store.close()


def test_a_day_is_read_from_hours_minutes_and_raw_edges(store: DuckDBStore) -> None:
    agents = Agents()
    # a window every ten minutes, its midpoint 30 s into it
    agents.commit(store, *(Window(0, m * 600 + 25, 10, "v1", ((0, 0, 1),)) for m in range(26 * 6)))
    report = store.compact(T0 + 26 * HOUR_NS, max_span_ns=48 * HOUR_NS)
    assert report.caught_up
    assert report.rows_written == {"samples_1m": 26 * 6, "samples_1h": 26, "latency_10s": 0}
    start, end = T0 + 30 * MINUTE_NS + 7 * S, T0 + 25 * HOUR_NS + 90 * S
    profile = store.profile("svc", start, end)
    assert profile.resolution == "1h"
    # midpoints 30:30 (the fourth window) to 25:00:30 (the 151st)
    assert dict(profile.samples) == {STACKS[0]: 151 - 3}
    assert plan_read(start, end, {"1m": T0 + 26 * HOUR_NS, "1h": T0 + 26 * HOUR_NS}).raw == (
        (start, T0 + 31 * MINUTE_NS), (T0 + 25 * HOUR_NS + 60 * S, end))
    # a short window inside the hours still reads minutes
    assert store.profile("svc", T0 + 60 * S, T0 + 300 * S).resolution == "1m"


def test_a_window_that_arrives_after_compaction_is_counted_once(store: DuckDBStore) -> None:
    agents = Agents()
    agents.commit(store, Window(0, 100, 10, "v1", ((0, 0, 5),)))
    assert store.compact(T0 + 2 * HOUR_NS, max_span_ns=2 * HOUR_NS).caught_up
    report_rows = store.table_rows()
    agents.commit(store, Window(1, 110, 10, "v1", ((0, 0, 7),)))  # late: its minute is done
    assert store.table_rows()["samples_1m"] == report_rows["samples_1m"] + 1
    assert store.compact(T0 + 2 * HOUR_NS).rows_written == {
        "samples_1m": 0, "samples_1h": 0, "latency_10s": 0}
    whole_hour = store.profile("svc", T0, T0 + HOUR_NS)
    assert whole_hour.resolution == "1h" and dict(whole_hour.samples) == {STACKS[0]: 12}
    assert dict(store.profile("svc", T0, T0 + HOUR_NS, instance="pod-b").samples) == {
        STACKS[0]: 7}


def test_rollups_outlive_the_raw_rows_until_their_own_retention(store: DuckDBStore) -> None:
    agents = Agents()
    agents.commit(store, *(Window(0, m * 60, 10, "v1", ((1, 1, 2),)) for m in range(180)))
    asyncio.run(compact_until(store, T0 + 3 * HOUR_NS, CompactionPolicy(pause_s=0)))
    day = 86_400 * S
    policy = RetentionPolicy(day, chunk_rows=50, pause_s=0, rollup_retention_ns=30 * day)
    # a day later the raw rows go, the rollups stay
    deleted = asyncio.run(delete_expired(store, T0 + 3 * HOUR_NS + day - policy.retention_ns,
                                         policy))
    assert deleted == {"samples": 180}
    rows = store.table_rows()
    assert rows["samples"] == 0 and rows["samples_1h"] == 3 and rows["samples_1m"] == 180
    assert dict(store.profile("svc", T0, T0 + 3 * HOUR_NS).samples) == {STACKS[1]: 360}
    # past the rollups' own retention they go too, a whole bucket at a time
    later = T0 + HOUR_NS + 30 * day
    deleted = asyncio.run(delete_expired(store, later - policy.retention_ns, policy))
    assert deleted == {"samples_1m": 60, "samples_1h": 1}
    assert dict(store.profile("svc", T0, T0 + 3 * HOUR_NS).samples) == {STACKS[1]: 240}


def test_compaction_of_an_empty_store_sets_watermarks(store: DuckDBStore) -> None:
    report = store.compact(T0 + 90 * MINUTE_NS)
    assert report.caught_up and sum(report.rows_written.values()) == 0
    Agents().commit(store, Window(0, 30, 10, "v2", ((2, 0, 3),)))  # before the watermarks
    profile = store.profile("svc", T0, T0 + HOUR_NS, version="v2")
    assert profile.resolution == "1h" and dict(profile.samples) == {STACKS[2]: 3}
    assert [level.name for level in LEVELS] == ["1h", "1m"]


def test_the_stack_cache_is_bounded_and_gives_the_same_stacks(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "cache.duckdb")
    try:
        store._stacks.max_stacks = 2  # room for two of the three stacks
        agents = Agents()
        agents.commit(store, Window(0, 0, 10, "v1", ((0, 0, 1), (1, 0, 2))),
                      Window(1, 60, 10, "v1", ((2, 1, 3),)))
        assert dict(store.profile("svc", T0, T0 + 60 * S).samples) == {STACKS[0]: 1, STACKS[1]: 2}
        assert len(store._stacks.stacks) == 2
        everything = store.profile("svc", T0, T0 + 120 * S)  # one more: it starts again
        assert dict(everything.samples) == {STACKS[0]: 1, STACKS[1]: 2, STACKS[2]: 3}
        assert len(store._stacks.stacks) == 1
        assert store.profile("svc", T0, T0 + 120 * S) == everything
    finally:
        store.close()


def test_the_background_loop_compacts_behind_its_grace_and_stops(store: DuckDBStore) -> None:
    agents = Agents()
    agents.commit(store, *(Window(0, m * 60, 10, "v1", ((0, 0, 1),)) for m in range(30)))
    policy = CompactionPolicy(interval_s=3600, first_delay_s=0, grace_ns=10 * MINUTE_NS,
                              max_span_ns=7 * MINUTE_NS, pause_s=0)

    async def scenario() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(run_compaction(store, policy, stop,
                                                  clock=lambda: T0 + 30 * MINUTE_NS))
        while store.table_rows()["samples_1m"] < 20:
            await asyncio.sleep(0.01)  # polling a condition, bounded by the test timeout
        stop.set()
        await asyncio.wait_for(loop, 10)  # no waiting out the hour-long interval

    asyncio.run(scenario())
    # the last ten minutes wait for their grace; everything before is rolled up
    assert store.table_rows()["samples_1m"] == 20
    assert store.profile("svc", T0, T0 + 20 * MINUTE_NS).resolution == "1m"
