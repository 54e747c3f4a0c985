"""The streamed-token demo server's engine: continuous batching over a paged KV cache,
simulated.

`Scheduler` is the pure part, shaped after vLLM's: a FIFO waiting queue, a running batch
of at most `max_num_seqs` sequences, and a KV cache of `kv_blocks` blocks of BLOCK_TOKENS
tokens, of which a sequence holds ceil((prompt + generated) / BLOCK_TOKENS). Each step:

1. the cache shrank below what the batch holds (the `kv_blocks` flag lowered): the most
   recently admitted sequences are preempted until it fits;
2. every running sequence needs room for one more token; when a block is needed and none
   is free, the most recently admitted sequence is preempted: its blocks are freed, it goes
   back to the head of the queue and is recomputed (its prompt and the tokens it already
   generated prefilled again) when it is admitted again;
3. unless step 2 preempted anything, waiting sequences are admitted in order while the
   batch has a slot and the cache has room for the sequence's tokens and the one this step
   adds; one that would not fit the whole cache is failed.

Every sequence in the batch then gets one token (the prefill of an admitted one yields its
first token in the same step). A step takes `StepCosts.step_s`: prefill per prefilled token,
decode per sequence in the batch, and a fixed overhead, waited out in
`simulated_device_wait` as the host waits on a GPU's kernels, plus a small fixed amount of
real Python work in `engine_bookkeeping`. So the engine costs little CPU and keeps its
timing on a busy two-core host, and a profile of it looks the same whatever the load.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from llm_metrics import EngineMetrics

log = logging.getLogger("llm-server")
BLOCK_TOKENS = 16
BOOKKEEPING_ITERATIONS = 4000  # about 0.3 ms of Python on an idle core, every step


def blocks_for(tokens: int) -> int:
    return -(-tokens // BLOCK_TOKENS)


@dataclass(frozen=True, slots=True)
class Limits:
    """The engine's runtime limits (flags max_num_seqs and kv_blocks)."""

    max_num_seqs: int
    kv_blocks: int


@dataclass(frozen=True, slots=True)
class StepCosts:
    """Simulated device time of one step (see the llm_server docstring's arithmetic)."""

    prefill_s_per_token: float = 0.0003
    decode_s_per_seq: float = 0.0005
    overhead_s: float = 0.0075

    def step_s(self, prefill_tokens: int, batch: int) -> float:
        return (prefill_tokens * self.prefill_s_per_token + batch * self.decode_s_per_seq
                + self.overhead_s)


@dataclass(eq=False)
class Sequence:
    """One request's generation; its tokens go to `outbox` (None after the last)."""

    id: int
    prompt_tokens: int
    max_tokens: int
    arrived: float
    generated: int = 0
    blocks: int = 0
    state: str = "waiting"  # waiting, running, done
    first_scheduled: float | None = None
    last_token: float | None = None
    preemptions: int = 0
    finish_reason: str | None = None  # length, abort, error
    outbox: queue.SimpleQueue[int | None] = field(default_factory=queue.SimpleQueue)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.generated


@dataclass(frozen=True, slots=True)
class StepPlan:
    batch: tuple[Sequence, ...]  # every sequence that gets a token this step
    prefill_tokens: int  # prompt (and, recomputed, generated) tokens prefilled this step
    admitted: tuple[Sequence, ...]
    preempted: int
    failed: tuple[Sequence, ...]  # would not fit the whole cache


class Scheduler:
    """The queue, the batch and the block count; pure, callers hold a lock around it."""

    def __init__(self) -> None:
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order: the last is the newest
        self.used_blocks = 0
        self.preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence whose client went away, wherever it is."""
        if seq.state == "waiting" and seq in self.waiting:
            self.waiting.remove(seq)
        elif seq.state == "running":
            self._release(seq)
        seq.state, seq.finish_reason = "done", seq.finish_reason or "abort"

    def schedule(self, limits: Limits) -> StepPlan:
        preempted = 0
        while self.used_blocks > limits.kv_blocks and self.running:  # the cache shrank
            self._preempt(self.running[-1])
            preempted += 1
        for seq in list(self.running):
            if seq.state != "running":  # preempted above as someone's victim
                continue
            need = blocks_for(seq.tokens + 1) - seq.blocks
            while need > limits.kv_blocks - self.used_blocks and self.running[-1] is not seq:
                self._preempt(self.running[-1])
                preempted += 1
            if need > limits.kv_blocks - self.used_blocks:
                self._preempt(seq)
                preempted += 1
                continue
            seq.blocks += need
            self.used_blocks += need
        admitted, failed, prefill = [], [], 0
        while not preempted and self.waiting and len(self.running) < limits.max_num_seqs:
            seq = self.waiting[0]
            need = blocks_for(seq.tokens + 1)
            if need > limits.kv_blocks:
                self.waiting.popleft()
                seq.state, seq.finish_reason = "done", "error"
                failed.append(seq)
                continue
            if need > limits.kv_blocks - self.used_blocks:
                break
            self.waiting.popleft()
            seq.state, seq.blocks = "running", need
            self.used_blocks += need
            self.running.append(seq)
            admitted.append(seq)
            prefill += seq.tokens
        self.preemptions += preempted
        return StepPlan(tuple(self.running), prefill, tuple(admitted), preempted, tuple(failed))

    def complete(self, plan: StepPlan) -> tuple[list[Sequence], list[Sequence]]:
        """One token for each sequence of the step still running; (got a token, finished)."""
        got, finished = [], []
        for seq in plan.batch:
            if seq.state != "running":  # aborted while the step ran
                continue
            seq.generated += 1
            got.append(seq)
            if seq.generated >= seq.max_tokens:
                self._release(seq)
                seq.state, seq.finish_reason = "done", "length"
                finished.append(seq)
        return got, finished

    def usage(self, limits: Limits) -> float:
        return min(1.0, self.used_blocks / limits.kv_blocks)

    def _preempt(self, seq: Sequence) -> None:
        self._release(seq)
        seq.state = "waiting"
        seq.preemptions += 1
        self.waiting.appendleft(seq)

    def _release(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.used_blocks -= seq.blocks
        seq.blocks = 0


def engine_bookkeeping() -> int:
    """The engine's real CPU work per step (block tables, sampling metadata): fixed."""
    total = 0
    for i in range(BOOKKEEPING_ITERATIONS):
        total += i * i
    return total


def simulated_device_wait(seconds: float) -> None:
    """Where the host would wait on the GPU's prefill and decode kernels."""
    time.sleep(seconds)


class Engine:
    """The engine thread around a Scheduler: submit, stream, abort."""

    def __init__(self, limits: Callable[[], Limits], metrics: EngineMetrics,
                 costs: StepCosts = StepCosts(), clock: Callable[[], float] = time.monotonic) -> None:
        self._limits, self._metrics, self._costs, self._clock = limits, metrics, costs, clock
        self._scheduler = Scheduler()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name="llm-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(5.0)

    def submit(self, prompt_tokens: int, max_tokens: int) -> Sequence:
        seq = Sequence(next(self._ids), prompt_tokens, max_tokens, self._clock())
        with self._cond:
            self._scheduler.add(seq)
            self._publish()
            self._cond.notify_all()
        return seq

    def abort(self, seq: Sequence) -> None:
        with self._cond:
            if seq.state != "done":
                self._scheduler.abort(seq)
                self._publish()

    def stats(self) -> dict[str, float]:
        limits = self._limits()
        with self._cond:
            s = self._scheduler
            return {"running": len(s.running), "waiting": len(s.waiting),
                    "kv_blocks_used": s.used_blocks, "kv_usage": round(s.usage(limits), 4),
                    "preemptions": s.preemptions, "max_num_seqs": limits.max_num_seqs,
                    "kv_blocks": limits.kv_blocks}

    def _publish(self) -> None:
        s = self._scheduler
        self._metrics.gauges(len(s.running), len(s.waiting), s.usage(self._limits()))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # a broken step must not stop every stream for good
                log.exception("engine step failed")
                self._stop.wait(0.1)

    def _step(self) -> None:
        with self._cond:
            s = self._scheduler
            if not s.waiting and not s.running:
                self._cond.wait(0.5)
                return
            plan = s.schedule(self._limits())
            self._publish()
        now = self._clock()
        for seq in plan.failed:
            seq.outbox.put(None)
        first = [seq for seq in plan.admitted if seq.first_scheduled is None]
        for seq in first:
            seq.first_scheduled = now
        self._metrics.scheduled(first, plan.preempted)
        if not plan.batch:  # nothing fits yet: wait for a sequence to finish or go away
            self._stop.wait(self._costs.overhead_s)
            return
        engine_bookkeeping()
        simulated_device_wait(self._costs.step_s(plan.prefill_tokens, len(plan.batch)))
        with self._cond:
            got, finished = s.complete(plan)
            self._publish()
        now = self._clock()
        for seq in got:
            self._metrics.token(seq, now)
            seq.last_token = now
            seq.outbox.put(seq.generated - 1)
        for seq in finished:
            self._metrics.finished(seq, now)
            seq.outbox.put(None)
