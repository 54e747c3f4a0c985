"""The streamed-token demo server's scheduler (deploy/demo/llm_engine.py), step by step:
the batch bound, admission by KV room, preemption of the newest, recompute, shrinking."""

from __future__ import annotations

from types import ModuleType

import pytest

from support.demo_servers import DEMO


@pytest.fixture()
def engine(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(DEMO))  # run by path: its siblings import by name
    import llm_engine

    return llm_engine


def _seq(engine: ModuleType, prompt: int, max_tokens: int = 100) -> object:
    return engine.Sequence(0, prompt, max_tokens, 0.0)


def test_the_batch_is_bounded_and_the_queue_is_fifo(engine: ModuleType) -> None:
    s = engine.Scheduler()
    seqs = [_seq(engine, 4) for _ in range(5)]
    for seq in seqs:
        s.add(seq)
    plan = s.schedule(engine.Limits(max_num_seqs=2, kv_blocks=100))
    assert plan.admitted == tuple(seqs[:2]) and plan.prefill_tokens == 8
    assert list(s.waiting) == seqs[2:]
    got, finished = s.complete(plan)
    assert got == seqs[:2] and not finished and seqs[0].generated == 1
    assert s.schedule(engine.Limits(2, 100)).admitted == ()  # still full: they wait


def test_no_free_block_preempts_the_newest_which_is_recomputed_later(engine: ModuleType) -> None:
    s = engine.Scheduler()
    old, new = _seq(engine, 16), _seq(engine, 16)
    s.add(old)
    s.add(new)
    limits = engine.Limits(max_num_seqs=8, kv_blocks=4)
    plan = s.schedule(limits)  # 17 tokens each: 2 blocks each, the cache is full
    assert plan.admitted == (old, new) and s.used_blocks == 4 and s.usage(limits) == 1.0
    s.complete(plan)
    for _ in range(15):  # up to 32 tokens each: still 2 blocks
        s.complete(s.schedule(limits))
    plan = s.schedule(limits)  # token 33 of the oldest needs a third block: none is free
    assert plan.preempted == 1 and plan.batch == (old,) and list(s.waiting) == [new]
    assert (new.state, new.blocks, new.preemptions, new.generated) == ("waiting", 0, 1, 16)
    assert s.preemptions == 1
    old.max_tokens = old.generated + 1  # the oldest finishes with this step
    _, finished = s.complete(plan)
    assert finished == [old] and s.used_blocks == 0
    plan = s.schedule(limits)  # recomputed: its prompt and the 16 tokens it had made
    assert plan.admitted == (new,) and plan.prefill_tokens == 32


def test_a_shrunk_cache_preempts_until_the_batch_fits(engine: ModuleType) -> None:
    s = engine.Scheduler()
    seqs = [_seq(engine, 20) for _ in range(3)]  # 2 blocks each
    for seq in seqs:
        s.add(seq)
    s.complete(s.schedule(engine.Limits(8, 100)))
    plan = s.schedule(engine.Limits(8, 4))
    assert plan.preempted == 1 and list(s.waiting) == [seqs[2]] and s.used_blocks == 4


def test_a_prompt_larger_than_the_whole_cache_fails_and_abort_frees(engine: ModuleType) -> None:
    s = engine.Scheduler()
    huge, small = _seq(engine, 100), _seq(engine, 3)
    s.add(huge)
    s.add(small)
    plan = s.schedule(engine.Limits(8, 4))
    assert plan.failed == (huge,) and huge.finish_reason == "error"
    assert plan.admitted == (small,) and s.used_blocks == 1
    s.abort(small)
    assert s.used_blocks == 0 and not s.running and small.finish_reason == "abort"


def test_step_costs_add_prefill_decode_and_overhead(engine: ModuleType) -> None:
    costs = engine.StepCosts()
    assert costs.step_s(0, 1) == pytest.approx(0.008)
    assert costs.step_s(100, 10) == pytest.approx(0.030 + 0.005 + 0.0075)
