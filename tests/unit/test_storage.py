"""DuckDBStore on a real DuckDB file: round trips, dedupe, filters, reopen, locking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Frame, SampleKey
from pyrometer.collector.errors import DatabaseInUseError, StorageError
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.model import by_count
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.store import BatchOutcome
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, stack

S = NANOS_PER_SECOND
MAIN = stack("main", "serve", "forward")
IDLE = stack("main", "wait")
TOKENIZE = stack("main", "serve", "tokenize")


class Agent:
    """An encoder and decoder pair: batches as the ingest server would hand them over."""

    def __init__(self, **identity: object) -> None:
        self.encoder = StreamEncoder(**identity)  # type: ignore[arg-type]
        self.decoder = StreamDecoder()

    def batch(self, seq: int, counts: dict[SampleKey, int], **window: object) -> DecodedBatch:
        return self.decoder.decode(self.encoder.batch(seq, counts, **window), NOW_NS)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> DuckDBStore:
    opened = DuckDBStore(tmp_path / "pyrometer.duckdb")
    yield opened  # type: ignore[misc]
    opened.close()


def test_commit_and_query_round_trip(store: DuckDBStore) -> None:
    a, b = Agent(agent_id="a", instance="pod-a"), Agent(agent_id="b", instance="pod-b")
    report = store.commit([
        a.batch(1, {SampleKey(MAIN, "MainThread"): 5, SampleKey(IDLE, "MainThread"): 2}),
        b.batch(1, {SampleKey(MAIN, "MainThread"): 4, SampleKey(TOKENIZE, "w"): 9}),
    ])
    assert report.outcomes == (BatchOutcome.STORED, BatchOutcome.STORED)
    # MAIN's frames are shared: each stack and frame is written once
    assert report.rows_written == {"samples": 4, "stacks": 3, "frames": 5}
    profile = store.profile("svc", BASE_NS, BASE_NS + 60 * S)
    assert profile.samples == ((MAIN, 9), (TOKENIZE, 9), (IDLE, 2))
    assert profile.rate_hz == 100.0 and not profile.idle_included
    assert (profile.start_ns, profile.end_ns) == (BASE_NS, BASE_NS + 60 * S)
    [summary] = store.services()
    assert summary.name == "svc" and summary.instances == ("pod-a", "pod-b")
    assert (summary.first_seen_ns, summary.last_seen_ns, summary.samples) == (
        BASE_NS, BASE_NS + 10 * S, 20)


def test_a_batch_of_known_stacks_has_its_frames_left_unread(store: DuckDBStore) -> None:
    # the decoder gathers a batch's frames only when read, and a store reads them only
    # for a batch with a stack it does not have: the steady state gathers none
    agent = Agent(agent_id="a")
    store.commit([agent.batch(1, {SampleKey(MAIN, "t"): 1})])
    known = agent.batch(2, {SampleKey(MAIN, "t"): 2})
    new = agent.batch(3, {SampleKey(MAIN, "t"): 1, SampleKey(TOKENIZE, "t"): 3})
    report = store.commit([known, new])
    assert known.frames._columns is None and new.frames._columns is not None
    assert report.rows_written["frames"] == 1 and report.rows_written["stacks"] == 1
    profile = store.profile("svc", BASE_NS, BASE_NS + 60 * S)
    assert profile.samples == ((MAIN, 4), (TOKENIZE, 3))
    # still there when read: MAIN's frames, a part of the new batch's
    assert set(known.frames.ids) < set(new.frames.ids)


def test_resent_batch_is_a_duplicate_and_stored_once(store: DuckDBStore) -> None:
    agent = Agent()
    first = agent.batch(1, {SampleKey(MAIN): 5})
    second = agent.batch(2, {SampleKey(IDLE): 1}, start_ns=BASE_NS + 10 * S)
    assert store.commit([first]).outcomes == (BatchOutcome.STORED,)
    # a retry of seq 1, and within one group a batch sent twice over two streams
    report = store.commit([first, second, second])
    assert report.outcomes == (
        BatchOutcome.DUPLICATE, BatchOutcome.STORED, BatchOutcome.DUPLICATE)
    assert report.rows_written["samples"] == 1
    assert store.profile("svc", BASE_NS, BASE_NS + 60 * S).samples == ((MAIN, 5), (IDLE, 1))
    # a lower seq than the high-water mark is a duplicate too
    assert store.commit([first]).outcomes == (BatchOutcome.DUPLICATE,)


def test_marks_are_appended_and_pruned_to_each_agents_highest(tmp_path: Path) -> None:
    # a commit appends the marks it moves (no UPDATE); an agent's mark is its highest
    # row, before compaction prunes the rest and after, also in a file opened again
    path = tmp_path / "p.duckdb"
    a, b = Agent(agent_id="a"), Agent(agent_id="b")
    first = DuckDBStore(path)
    for seq in (1, 2, 3):
        first.commit([a.batch(seq, {SampleKey(MAIN): 1}, start_ns=BASE_NS + seq * 10 * S)])
    first.commit([b.batch(7, {SampleKey(IDLE): 1})])
    first.commit([a.batch(2, {SampleKey(MAIN): 1})])  # a retry: no mark moves

    def marks(store: DuckDBStore) -> list[tuple[str, int]]:
        return store._con.execute("SELECT agent_id, seq FROM agent_hwm ORDER BY ALL").fetchall()

    assert marks(first) == [("a", 1), ("a", 2), ("a", 3), ("b", 7)]
    first.close()
    again = DuckDBStore(path)
    try:
        assert again.commit([a.batch(3, {SampleKey(MAIN): 1}), b.batch(6, {SampleKey(IDLE): 1})]
                            ).outcomes == (BatchOutcome.DUPLICATE, BatchOutcome.DUPLICATE)
        again.compact(BASE_NS)
        assert marks(again) == [("a", 3), ("b", 7)]
        report = again.commit([a.batch(3, {SampleKey(MAIN): 1}), a.batch(4, {SampleKey(MAIN): 1},
                                                                      start_ns=BASE_NS + 40 * S)])
        assert report.outcomes == (BatchOutcome.DUPLICATE, BatchOutcome.STORED)
        assert marks(again) == [("a", 3), ("a", 4), ("b", 7)]
    finally:
        again.close()
    last = DuckDBStore(path)
    try:
        assert last.commit([a.batch(4, {SampleKey(MAIN): 1})]).outcomes == (BatchOutcome.DUPLICATE,)
    finally:
        last.close()


def test_window_counts_when_its_midpoint_is_in_range(store: DuckDBStore) -> None:
    agent = Agent()
    # windows [0, 10) s and [10, 20) s after BASE_NS: midpoints at 5 s and 15 s
    store.commit([
        agent.batch(1, {SampleKey(MAIN): 1}),
        agent.batch(2, {SampleKey(IDLE): 2}, start_ns=BASE_NS + 10 * S),
    ])

    def stacks(start_s: int, end_s: int) -> list[object]:
        profile = store.profile("svc", BASE_NS + start_s * S, BASE_NS + end_s * S)
        return [s for s, _ in profile.samples]

    assert stacks(0, 20) == [IDLE, MAIN]
    assert stacks(5, 15) == [MAIN]  # start inclusive
    assert stacks(6, 15) == []  # end exclusive
    assert stacks(6, 16) == [IDLE]
    assert stacks(-100, 0) == []


def test_empty_window_and_unknown_service_give_empty_profiles(store: DuckDBStore) -> None:
    assert store.profile("svc", BASE_NS, BASE_NS + S).samples == ()
    store.commit([Agent().batch(1, {SampleKey(MAIN): 1})])
    empty = store.profile("nope", BASE_NS, BASE_NS + 60 * S)
    assert empty.samples == () and empty.total == 0 and empty.rate_hz == 100.0


def test_label_filters(store: DuckDBStore) -> None:
    old = Agent(agent_id="a", instance="pod-a", labels={"version": "v1"}, target_pid=10)
    new = Agent(agent_id="b", instance="pod-b", labels={"version": "v2"}, target_pid=20)
    store.commit([
        old.batch(1, {SampleKey(MAIN, "MainThread"): 3, SampleKey(IDLE, "io", 11): 1},
                  idle_included=True),
        new.batch(1, {SampleKey(TOKENIZE, "MainThread"): 7}, rate_hz=50.0),
    ])
    window = (BASE_NS, BASE_NS + 60 * S)

    def stacks(**filters: object) -> list[object]:
        return [s for s, _ in store.profile("svc", *window, **filters).samples]  # type: ignore[arg-type]

    assert stacks(instance="pod-a") == [MAIN, IDLE]
    assert stacks(version="v2") == [TOKENIZE]
    assert stacks(thread="MainThread") == [TOKENIZE, MAIN]
    assert stacks(pid=10) == [MAIN]  # the target's own rows carry its pid
    assert stacks(pid=11) == [IDLE]
    assert stacks(version="v1", thread="io") == [IDLE]
    assert stacks(version="v3") == []
    mixed = store.profile("svc", *window)
    assert mixed.idle_included and mixed.rate_hz == 50.0  # most samples were at 50 Hz
    assert not store.profile("svc", *window, version="v2").idle_included


def test_reopened_file_has_the_data(tmp_path: Path) -> None:
    path = tmp_path / "p.duckdb"
    agent = Agent()
    first = DuckDBStore(path)
    first.commit([agent.batch(1, {SampleKey(MAIN): 4})])
    first.close()
    with pytest.raises(StorageError):
        first.profile("svc", BASE_NS, BASE_NS + 60 * S)
    again = DuckDBStore(path)
    try:
        assert again.profile("svc", BASE_NS, BASE_NS + 60 * S).samples == ((MAIN, 4),)
        # the high-water mark survived, and known stacks are not written again
        assert again.commit([agent.batch(1, {SampleKey(MAIN): 4})]).outcomes == (
            BatchOutcome.DUPLICATE,)
        report = again.commit([agent.batch(2, {SampleKey(MAIN): 1})])
        assert report.rows_written == {"samples": 1, "stacks": 0, "frames": 0}
    finally:
        again.close()


def test_dictionary_rows_written_twice_are_not_double_counted(tmp_path: Path) -> None:
    path = tmp_path / "p.duckdb"
    store = DuckDBStore(path)
    store.commit([Agent().batch(1, {SampleKey(MAIN): 4, SampleKey(IDLE): 1})])
    store.close()
    # as a second collector would, write every stack and frame again
    with duckdb.connect(str(path)) as con:
        con.execute("INSERT INTO stacks SELECT * FROM stacks")
        con.execute("INSERT INTO frames SELECT * FROM frames")
    store = DuckDBStore(path)
    try:
        assert store.profile("svc", BASE_NS, BASE_NS + 60 * S).samples == ((MAIN, 4), (IDLE, 1))
    finally:
        store.close()


def test_file_locked_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
         "sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(DatabaseInUseError) as raised:
            DuckDBStore(path)
        message = str(raised.value)
        assert f"database file {path} is in use by another process (pid {holder.pid})" in message
    finally:
        holder.communicate("")
    DuckDBStore(path).close()  # usable once the other process is gone


def test_a_file_from_before_stack_numbers_is_numbered_once_and_reads_the_same(
        tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    a = Agent(agent_id="a")
    batches = [a.batch(1, {SampleKey(MAIN, "MainThread"): 5, SampleKey(IDLE, "w"): 2}),
               a.batch(2, {SampleKey(TOKENIZE, "MainThread"): 3, SampleKey(MAIN, "w"): 1},
                       start_ns=BASE_NS + 10 * S)]
    store = DuckDBStore(path)
    store.commit(batches)
    expected = store.profile("svc", BASE_NS, BASE_NS + 60 * S)
    store.close()
    with duckdb.connect(str(path)) as con:  # back to the layout before stack numbers
        # (and before sample rows named their source by number: both migrations run)
        con.execute("CREATE TABLE old_samples AS SELECT s.* EXCLUDE (stack_no), k.stack_id "
                    "FROM (SELECT *, r.rowid AS r FROM samples_rows AS r JOIN sources "
                    "USING (source_no)) AS s JOIN stacks k USING (stack_no) ORDER BY s.r")
        con.execute("INSERT INTO old_samples BY NAME SELECT * EXCLUDE (stack_no), 12345 AS "
                    "stack_id FROM samples LIMIT 1")  # a row whose stack was never stored
        con.execute("DROP VIEW samples")
        con.execute("DROP TABLE samples_rows")
        con.execute("CREATE TABLE samples AS SELECT start_ns, end_ns, service, instance, host, "
                    "agent_id, seq, version, labels, pid, thread, stack_id, count, rate_hz, "
                    "idle_included FROM old_samples")
        con.execute("DROP TABLE old_samples")
        con.execute("ALTER TABLE stacks DROP COLUMN stack_no")
        for rollup in ("samples_1m", "samples_1h", "rollup_state"):  # rollups keyed by hash
            con.execute(f"DROP TABLE {rollup}")
        con.execute("CREATE TABLE samples_1m (bucket_ns BIGINT, stack_id BIGINT)")
    reopened = DuckDBStore(path)
    try:
        assert reopened.profile("svc", BASE_NS, BASE_NS + 60 * S) == expected
        assert reopened.table_rows()["samples"] == 5
        # new stacks get the next numbers, old ones keep theirs
        report = reopened.commit([a.batch(3, {SampleKey(stack("main", "new"), "w"): 4,
                                              SampleKey(MAIN, "w"): 6},
                                          start_ns=BASE_NS + 20 * S)])
        assert report.rows_written["stacks"] == 1
        assert reopened.compact(BASE_NS + 3600 * S).caught_up
        after = reopened.profile("svc", BASE_NS - 60 * S, BASE_NS + 3600 * S)
        assert dict(after.samples)[MAIN] == 5 + 1 + 6
        assert dict(after.samples)[stack("main", "new")] == 4
    finally:
        reopened.close()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT list(stack_no ORDER BY stack_no) FROM stacks").fetchone() == (
            [1, 2, 3, 4],)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(["a", "b", "c"]), max_size=4),
                          st.integers(1, 4)), unique_by=lambda item: tuple(item[0])))
def test_a_profiles_stacks_are_by_descending_count_then_by_their_frames(
        items: list[tuple[list[str], int]]) -> None:
    samples = [(tuple(Frame(name, "f.py", 1) for name in names), n) for names, n in items]
    want = sorted(samples, key=lambda s: (-s[1], [(f.name, f.file, f.line) for f in s[0]]))
    assert by_count(list(samples)) == want
