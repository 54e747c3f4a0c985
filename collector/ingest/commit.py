"""Group commit: batches from all streams that arrive close together share one storage
transaction.

A DuckDB (or DuckLake) commit costs far more than appending a few hundred rows to it,
so committing each agent's batch on its own caps ingest at a few hundred batches per
second. The committer gathers batches until the oldest has waited `max_delay_s` (or
until `max_group` batches wait), commits them in one transaction in a worker thread,
and then answers every batch's waiter; while a commit runs, the next group gathers.

The default wait, 100 ms, is set by a fleet at its agents' own pace (1,000 agents, a
batch every 10 s each: `make bench`, row 4) against the ack p99 it may cost (the goal is
under 250 ms). A commit's half-dozen statements (an Arrow append per table, the
high-water marks, the commit itself) cost about 9 ms of CPU whatever it carries, 0.3 ms
more per batch, so at that pace the wait decides how often the fixed cost is paid.
Measured in one session on 2 cores, on the paced level of `python tests/bench/
ingest_load.py --size full` (which runs it at 50, 100 and 200 ms; 150 ms by hand with
--commit-delay-ms; batches of 1,000 samples, 30 readings and 20 requests; collector CPU
per million samples, ack p99):

    wait     CPU-s / 1M                ack p99
    50 ms    4.2, 5.1 (2 runs)         145, 150 ms
    100 ms   3.1-3.8 (8 runs, 2 h)     186-324 ms (the 3 with the GC thresholds of
                                       gcpause.py: 208-226 ms)
    150 ms   2.8-3.1 (3 runs)          264-318 ms
    200 ms   2.8                       289 ms

The p99 is more than the wait and a commit. Part of the tail is DuckDB's automatic
checkpoint: the commit whose write-ahead log passes 16 MB also writes the tables out,
80-200 ms here (6 of 408 commits of 15 such batches, timed in a row; a 4 MB or 1 MB
threshold made checkpoints more frequent, not shorter), and the batches behind it wait
that much longer. Checkpointing after a group's acks instead, while the next group
gathers, did not move the p99 measurably (two runs each way at 100 ms: 197 and 324 ms
before, 227 and 259 after), so the rest of the tail is elsewhere; the load generators
share the 2 cores, and their own delays are in the ack times. A wait adds itself to the
p99 whatever the tail, so 100 ms is as long as the 250 ms goal allows. Without the
request records (the benchmark's batches until commit 9385307) 150 ms gave 2.2 CPU-s
and a p99 of 175 ms. Measured again once commits had got cheaper (commit 13e7917, the
same level run on its own, 100 and 150 ms alternating, four runs each): 2.12-2.65
CPU-s (median 2.28) and a p99 of 136-159 ms at 100 ms, 1.82-2.32 (median 2.19) and
190-220 ms at 150 ms: a gain within the runs' spread for 50-60 ms more p99, so 100 ms
stays. An agent keeps up to 8 batches unacknowledged (agent/ship/
shipper.py) and sends one every 10 s, so at its own pace a later ack costs it nothing.
Draining a spool beside a paced fleet, its 8 in flight share one wait (the servicer
reads a stream ahead of its acks, server.py): about 70 batches a second where 50 ms
allowed some 130, an hour of backlog in 5 s rather than 3 (69 a second measured beside
1,000 paced agents, `make bench` row 4; 8.9 while the servicer still read a batch per
ack). A read sees a batch 100 ms later at most.

Waiting only pays while company can still come, though. A stream that sends as fast as
it is acked (an agent draining its spool after an outage, a load generator with two
batches in flight) sends nothing more until its batches are committed, and when every
stream that has been active lately is in that state, the wait is pure loss: with a few
such streams and a 50 ms wait, ten closed-loop streams moved 133K samples/s where 5 ms
moved 270K (`make bench-lake`, the embedded file). So the group is committed at once
when every stream seen in the last `ACTIVE_S` has a batch queued or committing: no
active stream is left that could add to it. A fleet at its own pace never meets that
(at 1,000 agents about a hundred were acked in the last second and sit idle), a single
agent always does (nothing else is coming, so it is not kept waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Sequence

from pyrometer.collector.errors import ShuttingDownError
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.store import BatchOutcome, CommitReport, Store

log = logging.getLogger(__name__)

_Waiter = tuple[DecodedBatch, "asyncio.Future[BatchOutcome]"]
DEFAULT_DELAY_S = 0.1  # see the module docstring
# Batches in one commit at most. Only a saturated collector reaches it (1,000 streams
# with 2 batches in flight each keep 2,000 outstanding), and there a commit's fixed cost
# (a statement per table, the high-water marks, the commit) is shared by this many.
# Measured on 2 cores, 1,000 saturating agents of `tests/bench/ingest_load.py` (20 s
# levels, alternating): with a decode worker, 256 moved 1.24-1.42 M samples/s (7 runs),
# 512 1.42-1.47 M (6 runs), 1024 1.38-1.53 M (3 runs); decoding in the loop, 256 moved
# 1.09 and 1.19 M, 512 1.21 and 1.28 M. A group of 512 of the bench's batches holds about
# 10 MB of rows until it is committed; in one such run (a worker, 512) the 118 commits
# averaged 332 batches and 200 ms.
DEFAULT_MAX_GROUP = 512
# A stream counts as active for this long after it last submitted or was answered: far
# longer than a closed-loop stream takes from an ack to its next batch (a round trip),
# far shorter than an agent's own pace (a batch every 10 s).
ACTIVE_S = 1.0


class GroupCommitter:
    """Commits submitted batches in groups, one transaction per group, in order.

    `start()` inside the running event loop, `submit()` from any number of streams,
    `stop()` to commit what is queued and end.
    """

    def __init__(
        self, store: Store, *, max_delay_s: float = DEFAULT_DELAY_S,
        max_group: int = DEFAULT_MAX_GROUP,
        metrics: CollectorMetrics | None = None,
    ) -> None:
        if max_delay_s < 0 or max_group < 1:
            raise ValueError("max_delay_s must be >= 0 and max_group >= 1")
        self._store = store
        self._max_delay_s = max_delay_s
        self._max_group = max_group
        self._metrics = metrics or CollectorMetrics()
        self._pending: deque[_Waiter] = deque()
        self._arrived: deque[float] = deque()  # loop time each pending batch was submitted
        self._wakeup = asyncio.Event()  # something is pending, or stop() was called
        self._full = asyncio.Event()  # commit without waiting: a whole group is pending,
        # or no active stream is left that could add to it (see _note_*)
        # per stream (agent id): batches queued or committing, and when it was last active,
        # oldest first; `_idle` counts the active streams with nothing outstanding
        self._outstanding: dict[str, int] = {}
        self._active: OrderedDict[str, float] = OrderedDict()
        self._idle = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._metrics.commit_queue.set_function(lambda: len(self._pending))

    def start(self) -> None:
        """Start the commit loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def submit(self, batch: DecodedBatch) -> BatchOutcome:
        """Queue `batch` and wait until its group is committed.

        Returns STORED or DUPLICATE; raises StorageError when the commit failed, and
        ShuttingDownError once stop() has begun.
        """
        return await self.enqueue(batch)

    def enqueue(self, batch: DecodedBatch) -> asyncio.Future[BatchOutcome]:
        """Queue `batch`; the future is its outcome once its group is committed (as
        `submit`). Batches are committed in the order they are queued, so a stream may
        queue its next batch before the last one is answered.

        Raises ShuttingDownError once stop() has begun.
        """
        if self._closing or self._task is None:
            raise ShuttingDownError("the collector is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchOutcome] = loop.create_future()
        now = loop.time()
        self._pending.append((batch, future))
        self._arrived.append(now)
        self._note_submitted(batch.source.agent_id, now)
        self._wakeup.set()
        if len(self._pending) >= self._max_group or self._nobody_else(now):
            self._full.set()
        return future

    def _note_submitted(self, stream: str, now: float) -> None:
        outstanding = self._outstanding.get(stream, 0)
        if outstanding == 0 and stream in self._active:
            self._idle -= 1
        self._outstanding[stream] = outstanding + 1
        self._touch(stream, now)

    def _note_answered(self, stream: str, now: float) -> None:
        outstanding = self._outstanding[stream] - 1
        if outstanding:
            self._outstanding[stream] = outstanding
        else:
            del self._outstanding[stream]
            self._idle += 1
        self._touch(stream, now)

    def _touch(self, stream: str, now: float) -> None:
        """`stream` was active at `now`: it goes to the end of the oldest-first order."""
        self._active[stream] = now
        self._active.move_to_end(stream)

    def _nobody_else(self, now: float) -> bool:
        """True when every stream active in the last ACTIVE_S has a batch outstanding."""
        active = self._active
        while active:
            stream, seen = next(iter(active.items()))
            if seen >= now - ACTIVE_S:
                break
            if stream in self._outstanding:  # a commit outlasting ACTIVE_S: still active
                self._touch(stream, now)
                continue
            del active[stream]
            self._idle -= 1
        return self._idle == 0

    async def stop(self) -> None:
        """Commit everything already submitted, then end the loop."""
        self._closing = True
        self._wakeup.set()
        self._full.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                continue
            # the group gathers until its oldest batch has waited max_delay_s: batches
            # that queued while the last commit ran are committed at once, so a busy
            # collector never idles between commits, while a quiet one still puts
            # what arrives close together in one transaction
            now = asyncio.get_running_loop().time()
            wait = self._max_delay_s - (now - self._arrived[0])
            if len(self._pending) < self._max_group and wait > 0 and not self._nobody_else(now):
                if not self._closing:  # from here on, only what arrives may cut the wait
                    self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait)
            size = min(self._max_group, len(self._pending))
            group = [self._pending.popleft() for _ in range(size)]
            for _ in range(size):
                self._arrived.popleft()
            if not self._pending:
                self._wakeup.clear()
            try:
                await self._commit(group)
            except Exception:  # the loop must outlive any one group
                log.exception("group commit failed unexpectedly")
                _fail(group, RuntimeError("group commit failed unexpectedly"))
            now = asyncio.get_running_loop().time()
            for batch, _ in group:
                self._note_answered(batch.source.agent_id, now)

    async def _commit(self, group: list[_Waiter]) -> None:
        try:
            report = await self._commit_batches([batch for batch, _ in group])
        except Exception as exc:
            if len(group) == 1:
                _fail(group, exc)
                return
            # one bad batch must not fail the others: retry each on its own
            log.warning("commit of %d batches failed (%s); committing one by one", len(group), exc)
            for waiter in group:
                await self._commit([waiter])
            return
        for (_, future), outcome in zip(group, report.outcomes, strict=True):
            if not future.done():  # its stream may have gone away meanwhile
                future.set_result(outcome)

    async def _commit_batches(self, batches: Sequence[DecodedBatch]) -> CommitReport:
        started = time.perf_counter()
        try:
            report = await asyncio.to_thread(self._store.commit, batches)
        except Exception:
            self._metrics.commit_failures.inc()
            raise
        m = self._metrics
        m.commit_seconds.observe(time.perf_counter() - started)
        m.group_size.observe(len(batches))
        if report.conflicts:
            m.commit_conflicts.inc(report.conflicts)
        for batch, outcome in zip(batches, report.outcomes, strict=True):
            if outcome is BatchOutcome.DUPLICATE:
                m.duplicates.inc()
            else:
                m.batches.inc()
                m.samples.inc(batch.sample_count)
                # counted once the batch is stored, so a retried duplicate is not counted twice
                for (kind, reason), count in batch.rejected.items():
                    m.records_rejected.labels(kind=kind, reason=reason).inc(count)
                m.agents.observe(batch.source.service, batch.source.instance,
                                 batch.telemetry.agent_stats)
                m.services.observe(batch.source.service, batch.source.instance,
                                   batch.telemetry.requests, batch.telemetry.gpu)
        for table, rows in report.rows_written.items():
            m.rows.labels(table=table).inc(rows)
        return report


def _fail(group: list[_Waiter], exc: BaseException) -> None:
    for _, future in group:
        if not future.done():
            future.set_exception(exc)
