"""How the group committer gathers batches (collector/ingest/commit.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from pyrometer.agent.shared.model import SampleKey
from pyrometer.collector.ingest.commit import GroupCommitter
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.store import BatchOutcome, CommitReport
from support.ingest_builder import NOW_NS, StreamEncoder, stack

DELAY_S = 2.0  # long, so that a wait the committer should not make shows plainly


class SlowStore:
    """A store whose first commit holds until released; records when each began."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[tuple[float, int]] = []  # (monotonic time, batches)

    def commit(self, batches: Sequence[DecodedBatch]) -> CommitReport:
        self.started.append((time.monotonic(), len(batches)))
        if len(self.started) == 1:
            assert self.release.wait(30)
        return CommitReport(tuple(BatchOutcome.STORED for _ in batches), {})


def batches(n: int) -> list[DecodedBatch]:
    encoder, decoder = StreamEncoder(), StreamDecoder()
    return [decoder.decode(encoder.batch(seq, {SampleKey(stack("main")): 1}), NOW_NS)
            for seq in range(1, n + 1)]


def test_batches_that_queued_during_a_commit_are_committed_without_waiting_again() -> None:
    store = SlowStore()
    first, second, late = batches(3)

    async def run() -> float:
        committer = GroupCommitter(store, max_delay_s=DELAY_S, max_group=2)  # type: ignore[arg-type]
        committer.start()
        held = [asyncio.ensure_future(committer.submit(b)) for b in (first, second)]  # a full group
        while not store.started:
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(committer.submit(late))  # queues behind the held commit
        await asyncio.sleep(DELAY_S + 0.5)  # past its wait while the commit still runs
        released = time.monotonic()
        store.release.set()
        assert await asyncio.gather(*held, waiting) == [BatchOutcome.STORED] * 3
        await committer.stop()
        return released

    released = asyncio.run(run())
    assert [n for _, n in store.started] == [2, 1]
    # it had waited its DELAY_S by then: committed at once, not after another DELAY_S
    assert store.started[1][0] - released < DELAY_S * 0.75


def test_a_lone_batch_waits_for_company_at_most_its_delay() -> None:
    store = SlowStore()
    store.release.set()
    one, two = batches(2)

    async def run() -> list[BatchOutcome]:
        committer = GroupCommitter(store, max_delay_s=0.5)  # type: ignore[arg-type]
        committer.start()
        first = asyncio.ensure_future(committer.submit(one))
        await asyncio.sleep(0.05)
        outcomes = await asyncio.gather(first, committer.submit(two))
        await committer.stop()
        return list(outcomes)

    assert asyncio.run(run()) == [BatchOutcome.STORED] * 2
    assert [n for _, n in store.started] == [2]  # the second came within the first's wait
