"""How the group committer gathers batches (collector/ingest/commit.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from pyrometer.agent.shared.model import SampleKey
from pyrometer.collector.ingest import commit
from pyrometer.collector.ingest.commit import GroupCommitter
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.store import BatchOutcome, CommitReport
from support.ingest_builder import NOW_NS, StreamEncoder, stack

DELAY_S = 2.0  # long, so that a wait the committer should not make shows plainly


class SlowStore:
    """A store whose commit number `hold` (the first by default) holds until released;
    records when each began."""

    def __init__(self, hold: int = 1) -> None:
        self.release = threading.Event()
        self.hold = hold
        self.started: list[tuple[float, int]] = []  # (monotonic time, batches)

    def commit(self, batches: Sequence[DecodedBatch]) -> CommitReport:
        self.started.append((time.monotonic(), len(batches)))
        if len(self.started) == self.hold:
            assert self.release.wait(30)
        return CommitReport(tuple(BatchOutcome.STORED for _ in batches), {})


def batches(n: int) -> list[DecodedBatch]:
    encoder, decoder = StreamEncoder(), StreamDecoder()
    return [decoder.decode(encoder.batch(seq, {SampleKey(stack("main")): 1}), NOW_NS)
            for seq in range(1, n + 1)]


def test_batches_that_queued_during_a_commit_are_committed_without_waiting_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commit, "ACTIVE_S", 600.0)
    store = SlowStore(hold=2)
    first, second, late = batches(3)
    other = two_streams()[1][0]

    async def run() -> float:
        committer = GroupCommitter(store, max_delay_s=DELAY_S, max_group=2)  # type: ignore[arg-type]
        committer.start()
        # another stream, active and idle: without it nothing would wait at all (see below)
        assert await committer.submit(other) is BatchOutcome.STORED
        held = [asyncio.ensure_future(committer.submit(b)) for b in (first, second)]  # a full group
        while len(store.started) < 2:
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(committer.submit(late))  # queues behind the held commit
        await asyncio.sleep(DELAY_S + 0.5)  # past its wait while the commit still runs
        released = time.monotonic()
        store.release.set()
        assert await asyncio.gather(*held, waiting) == [BatchOutcome.STORED] * 3
        await committer.stop()
        return released

    released = asyncio.run(run())
    assert [n for _, n in store.started] == [1, 2, 1]
    # it had waited its DELAY_S by then: committed at once, not after another DELAY_S
    assert store.started[2][0] - released < DELAY_S * 0.75


def two_streams() -> tuple[list[DecodedBatch], list[DecodedBatch]]:
    """Three batches each from two agents' streams."""
    out = []
    for agent in ("agent-a", "agent-b"):
        encoder, decoder = StreamEncoder(agent_id=agent), StreamDecoder()
        out.append([decoder.decode(encoder.batch(seq, {SampleKey(stack("main")): 1}), NOW_NS)
                    for seq in range(1, 4)])
    return out[0], out[1]


def test_a_batch_waits_at_most_its_delay_for_an_active_stream_that_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commit, "ACTIVE_S", 600.0)  # b stays active however slow the machine
    store = SlowStore()
    store.release.set()
    a, b = two_streams()

    async def run() -> float:
        committer = GroupCommitter(store, max_delay_s=0.5)  # type: ignore[arg-type]
        committer.start()
        assert await committer.submit(b[0]) is BatchOutcome.STORED  # b: active, now idle
        submitted = time.monotonic()
        assert await committer.submit(a[0]) is BatchOutcome.STORED
        await committer.stop()
        return submitted

    submitted = asyncio.run(run())
    assert [n for _, n in store.started] == [1, 1]
    assert store.started[1][0] - submitted >= 0.45  # it waited for b, which sent nothing


def test_the_wait_ends_when_every_active_stream_has_a_batch_outstanding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commit, "ACTIVE_S", 600.0)
    store = SlowStore()
    store.release.set()
    a, b = two_streams()

    async def run() -> float:
        committer = GroupCommitter(store, max_delay_s=DELAY_S)  # type: ignore[arg-type]
        committer.start()
        # both arrive in one tick: one group, committed at once (no other stream exists)
        await asyncio.gather(committer.submit(a[0]), committer.submit(b[0]))
        submitted = time.monotonic()
        first = asyncio.ensure_future(committer.submit(a[1]))  # waits: b is active and idle
        await asyncio.sleep(0.1)
        assert not first.done()
        # b sends too, as a closed-loop stream does once acked: nothing else can come
        assert await asyncio.gather(first, committer.submit(b[1])) == [BatchOutcome.STORED] * 2
        await committer.stop()
        return submitted

    submitted = asyncio.run(run())
    assert [n for _, n in store.started] == [2, 2]
    assert store.started[0][0] - submitted < 0  # the first group did not wait for anyone
    assert store.started[1][0] - submitted < DELAY_S * 0.75  # nor the second, once b sent


def test_a_lone_stream_is_not_kept_waiting() -> None:
    store = SlowStore()
    store.release.set()
    (one, two, three) = batches(3)

    async def run() -> float:
        committer = GroupCommitter(store, max_delay_s=DELAY_S)  # type: ignore[arg-type]
        committer.start()
        started = time.monotonic()
        for batch in (one, two, three):  # a stream draining its spool, one at a time
            assert await committer.submit(batch) is BatchOutcome.STORED
        await committer.stop()
        return time.monotonic() - started

    # three commits, none of which waited DELAY_S for company that could not come
    assert asyncio.run(run()) < DELAY_S * 0.75
    assert [n for _, n in store.started] == [1, 1, 1]


def test_the_command_line_default_wait_is_the_committers() -> None:
    # config.py keeps its own copy (parsing flags should not load the ingest path)
    from pyrometer.collector import config

    assert config.DEFAULT_COMMIT_DELAY_MS / 1000 == commit.DEFAULT_DELAY_S
    assert config.CollectorConfig(db_path="x.duckdb").commit_delay_ms == config.DEFAULT_COMMIT_DELAY_MS
