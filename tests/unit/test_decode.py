"""The pure per-stream decoder: valid batches, every rejection, and state after one."""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Frame, SampleKey
from pyrometer.collector.errors import BatchLimitError, InvalidBatchError
from pyrometer.collector.ingest.decode import StreamDecoder, frame_id, stack_id
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.proto import ingest_pb2
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, decoded_counts, stack

MAIN = stack("main", "serve", "forward")
IDLE = stack("main", "wait")
COUNTS = {SampleKey(MAIN, "MainThread", 0): 7, SampleKey(IDLE, "worker", 4242): 3}


def test_valid_batch_decodes_to_content_hashed_rows() -> None:
    enc, dec = StreamEncoder(labels={"version": "v2", "zone": "eu"}), StreamDecoder()
    out = dec.decode(enc.batch(1, COUNTS), NOW_NS)
    assert out.seq == 1 and out.sample_count == 10 and out.row_count == 2
    assert out.source.version == "v2" and out.source.labels == (("zone", "eu"),)
    # a row's pid 0 means the target itself
    assert decoded_counts(out) == {
        SampleKey(MAIN, "MainThread", 100): 7, SampleKey(IDLE, "worker", 4242): 3}
    main_frames = [frame_id(f) for f in MAIN]
    assert stack_id(main_frames) in out.stacks.ids
    assert set(main_frames) <= set(out.frames.ids)
    assert dec.table_sizes == enc.table_sizes


def test_ids_are_the_same_on_every_stream_whatever_the_order() -> None:
    first, second = StreamEncoder(), StreamEncoder()
    dec_a, dec_b = StreamDecoder(), StreamDecoder()
    # the second stream saw another stack first, so its local ids differ
    dec_b.decode(second.batch(1, {SampleKey(stack("other", "path"), "t"): 1}), NOW_NS)
    a = dec_a.decode(first.batch(1, COUNTS), NOW_NS)
    b = dec_b.decode(second.batch(2, COUNTS), NOW_NS)
    assert a.window is not None and b.window is not None
    assert a.window.stack_ids == b.window.stack_ids
    assert frame_id(Frame("a", "bc")) != frame_id(Frame("ab", "c"))


def test_later_batches_refer_to_earlier_dictionary_entries() -> None:
    enc, dec = StreamEncoder(), StreamDecoder()
    dec.decode(enc.batch(1, COUNTS), NOW_NS)
    second = enc.batch(2, COUNTS, start_ns=BASE_NS + 10 * NANOS_PER_SECOND)
    assert not second.dictionary.stacks  # nothing new to send
    out = dec.decode(second, NOW_NS)
    # the referenced stacks still travel with the batch, so it is complete on its own
    assert len(out.stacks.ids) == 2 and out.sample_count == 10


def test_batch_without_window() -> None:
    out = StreamDecoder().decode(StreamEncoder().batch(1), NOW_NS)
    assert out.window is None and out.sample_count == 0 and not out.stacks.ids


Mutation = Callable[[ingest_pb2.Batch], None]


def _set(path: str, value: object) -> Mutation:
    def mutate(batch: ingest_pb2.Batch) -> None:
        *parents, leaf = path.split(".")
        target = batch
        for name in parents:
            target = getattr(target, name)
        setattr(target, leaf, value)
    return mutate


def _append(path: str, value: object) -> Mutation:
    def mutate(batch: ingest_pb2.Batch) -> None:
        owner, name = path.split(".")
        getattr(getattr(batch, owner), name).append(value)
    return mutate


def _replace(path: str, values: list[object]) -> Mutation:
    def mutate(batch: ingest_pb2.Batch) -> None:
        owner, name = path.split(".")
        field = getattr(getattr(batch, owner), name)
        del field[:]
        field.extend(values)
    return mutate


def _stack_frames(frames: list[int]) -> Mutation:
    def mutate(batch: ingest_pb2.Batch) -> None:
        del batch.dictionary.stacks[0].frames[:]
        batch.dictionary.stacks[0].frames.extend(frames)
    return mutate


def _prefix(index: int, base: int, keep: int, extra: int = 0) -> Mutation:
    """Make the index-th new stack (stream id index + 1, after "boot") start with
    `keep` frames of stack `base`, and `extra` more frames."""
    def mutate(batch: ingest_pb2.Batch) -> None:
        new = batch.dictionary.stacks[index]
        new.back, new.keep = index + 1 - base, keep
        new.frames.extend([0] * extra)
    return mutate


INVALID: dict[str, Mutation] = {
    "empty agent_id": _set("agent.agent_id", ""),
    "empty service": _set("agent.service", ""),
    "seq 0": _set("seq", 0),
    "seq beyond int64": _set("seq", 2**63),
    "negative target pid": _set("agent.target_pid", -1),
    "empty label key": lambda b: b.agent.labels.__setitem__("", "x"),
    "string_base": _set("dictionary.string_base", 1),
    "frame_base": _set("dictionary.frame_base", 5),
    "stack_base": _set("dictionary.stack_base", 9),
    "frame name id undefined": lambda b: setattr(b.dictionary.frames[0], "name", 999),
    "frame file id undefined": lambda b: setattr(b.dictionary.frames[0], "file", 999),
    "frame line out of range": lambda b: setattr(b.dictionary.frames[0], "line", 2**31),
    "stack frame id undefined": _stack_frames([0, 999]),
    "window stack id undefined": _replace("profile.stack_id_deltas", [1, 99]),
    "window stack id undefined, plain ids": lambda b: (
        _replace("profile.stack_id_deltas", [])(b), _replace("profile.stack_ids", [1, 99])(b)),
    "stack_ids and stack_id_deltas both": _append("profile.stack_ids", 1),
    "stack base is the stack itself (back 0)": _prefix(0, 1, 1),
    "stack base before the stream's first stack": _prefix(1, -1, 1),
    "stack back far beyond the first stack": lambda b: setattr(
        b.dictionary.stacks[1], "back", 2**32 - 1) or setattr(b.dictionary.stacks[1], "keep", 1),
    "stack keeps more frames than its base has": _prefix(1, 1, 4),
    "stack keeps more frames than an earlier batch's stack has": _prefix(0, 0, 2),
    "stack back without keep": _prefix(1, 1, 0),
    "window thread id undefined": _replace("profile.thread_ids", [0, 99]),
    "counts shorter": _replace("profile.counts", [1]),
    "thread_ids longer": _append("profile.thread_ids", 0),
    "pids shorter than the rows": _replace("profile.pids", [0]),
    "pids longer than the rows": _replace("profile.pids", [0, 0, 0]),
    "count of zero": _replace("profile.counts", [1, 0]),
    "negative pid": _replace("profile.pids", [0, -5]),
    "end equals start": _set("profile.end_unix_nanos", BASE_NS),
    "end before start": _set("profile.end_unix_nanos", BASE_NS - 1),
    "start before 2000": _set("profile.start_unix_nanos", 5),
    "seconds, not nanos": _set("profile.start_unix_nanos", 1_750_000_000),
    "years from now": lambda b: (
        _set("profile.start_unix_nanos", NOW_NS + 3 * 365 * 86400 * NANOS_PER_SECOND)(b),
        _set("profile.end_unix_nanos", NOW_NS + 3 * 365 * 86400 * NANOS_PER_SECOND + 1)(b)),
    "window of a day": _set("profile.end_unix_nanos", BASE_NS + 86400 * NANOS_PER_SECOND),
    "rate 0": _set("profile.rate_hz", 0.0),
    "negative rate": _set("profile.rate_hz", -100.0),
    "rate too high": _set("profile.rate_hz", 10_000.5),
    "rate NaN": _set("profile.rate_hz", float("nan")),
}

SMALL = DecodeLimits(max_rows=2, max_delta_entries=12, max_table_entries=10, max_labels=2)
LIMITS: dict[str, Mutation] = {
    "stack depth": _stack_frames([0] * 513),
    "stack depth with a prefix": _prefix(1, 1, 3, extra=510),
    "string of 4097 bytes": _append("dictionary.strings", "é" * 2048 + "x"),
    "long service name": _set("agent.service", "s" * 5000),
    "rows": lambda b: (_append("profile.stack_id_deltas", 0)(b), _append("profile.counts", 1)(b),
                       _append("profile.thread_ids", 0)(b)),
    "labels": lambda b: b.agent.labels.update({"a": "1", "b": "2", "c": "3"}),
    "count beyond limit": _replace("profile.counts", [1, 2**40]),
    "delta entries": lambda b: b.dictionary.strings.extend(["x"] * 8),
    "stream table": lambda b: b.dictionary.strings.extend(["x"] * 4),
}


def _prepared() -> tuple[StreamEncoder, StreamDecoder, ingest_pb2.Batch]:
    """A decoder one batch in, and a valid second batch that adds new entries."""
    enc, dec = StreamEncoder(), StreamDecoder(SMALL)
    dec.decode(enc.batch(1, {SampleKey(stack("boot"), "t0"): 1}), NOW_NS)
    nxt = enc.batch(2, {SampleKey(MAIN, "MainThread"): 7, SampleKey(IDLE, "worker"): 3})
    return enc, dec, nxt


@pytest.mark.parametrize(
    ("mutation", "error"),
    [pytest.param(m, InvalidBatchError, id=k) for k, m in INVALID.items()]
    + [pytest.param(m, BatchLimitError, id="limit: " + k) for k, m in LIMITS.items()],
)
def test_rejected_batch_changes_nothing(mutation: Mutation, error: type[Exception]) -> None:
    enc, dec, batch = _prepared()
    before = dec.table_sizes
    good = ingest_pb2.Batch()
    good.CopyFrom(batch)
    mutation(batch)
    with pytest.raises(error) as raised:
        dec.decode(batch, NOW_NS)
    if error is InvalidBatchError:
        assert not isinstance(raised.value, BatchLimitError)
    assert dec.table_sizes == before
    # the stream goes on as if the bad batch had never come
    assert dec.decode(good, NOW_NS).sample_count == 10


def test_stacks_are_prefix_coded_within_and_across_batches() -> None:
    enc, dec = StreamEncoder(), StreamDecoder()
    first = {SampleKey(stack("main", "serve", "forward", "matmul"), "t"): 2}
    second = {SampleKey(stack("main", "serve", "forward", "softmax"), "t"): 3,
              SampleKey(stack("main", "serve", "forward", "softmax", "exp"), "t"): 4,
              SampleKey(stack("main", "serve"), "t"): 1}
    dec.decode(enc.batch(1, first), NOW_NS)
    batch = enc.batch(2, second, start_ns=BASE_NS + 10 * NANOS_PER_SECOND)
    coded = [(s.back, s.keep, len(s.frames)) for s in batch.dictionary.stacks]
    # a new stack sends only what follows the longest prefix it shares with a known
    # one; new stacks go in frame id order, so the base is often the one just before
    assert coded == [(1, 2, 0), (2, 3, 1), (1, 4, 1)]
    assert decoded_counts(dec.decode(batch, NOW_NS)) == {
        SampleKey(k.stack, k.thread, 100): n for k, n in second.items()}
    assert dec.table_sizes == enc.table_sizes


def test_rows_go_sorted_as_deltas_and_default_columns_stay_empty() -> None:
    counts = {SampleKey(stack("main", name)): i + 1 for i, name in enumerate("edcba")}
    batch = StreamEncoder().batch(1, counts)
    window = batch.profile
    assert not window.stack_ids and list(window.stack_id_deltas) == [0, 1, 1, 1, 1]
    assert not window.thread_ids and not window.pids
    out = StreamDecoder().decode(batch, NOW_NS)
    assert out.window is not None and set(out.window.threads) == {""}
    assert set(out.window.pids) == {100}  # pid 0, the target
    assert decoded_counts(out) == {SampleKey(k.stack, "", 100): n for k, n in counts.items()}


def test_the_older_form_of_a_window_still_decodes() -> None:
    batch = StreamEncoder().batch(1, COUNTS)
    window = batch.profile
    plain = list(accumulate(window.stack_id_deltas))
    window.ClearField("stack_id_deltas")
    window.stack_ids.extend(plain)
    for stack_msg in batch.dictionary.stacks:
        stack_msg.ClearField("back")
        stack_msg.ClearField("keep")
    assert decoded_counts(StreamDecoder().decode(batch, NOW_NS)) == decoded_counts(
        StreamDecoder().decode(StreamEncoder().batch(1, COUNTS), NOW_NS))


def test_only_one_default_column_may_be_left_out() -> None:
    counts = {SampleKey(MAIN, "MainThread"): 7, SampleKey(IDLE, "worker"): 3}
    batch = StreamEncoder().batch(1, counts)
    assert len(batch.profile.thread_ids) == 2 and not batch.profile.pids
    out = StreamDecoder().decode(batch, NOW_NS)
    assert decoded_counts(out) == {SampleKey(k.stack, k.thread, 100): n for k, n in counts.items()}


def test_empty_stack_is_accepted() -> None:
    out = StreamDecoder().decode(StreamEncoder().batch(1, {SampleKey((), "t"): 2}), NOW_NS)
    assert out.stacks.frame_ids == ((),) and out.stacks.ids == (stack_id([]),)


def test_delta_without_entries_needs_no_base() -> None:
    enc, dec, batch = _prepared()
    batch.dictionary.ClearField("stacks")
    batch.dictionary.stack_base = 0
    batch.profile.ClearField("stack_id_deltas")
    batch.profile.stack_ids.extend([0, 0])
    assert dec.decode(batch, NOW_NS).sample_count == 10


frames_st = st.builds(
    Frame, st.sampled_from(["main", "run", "forward", "λ", "<module>"]),
    st.sampled_from(["a.py", "b/c.py", "ü.py"]), st.integers(0, 5000))
keys_st = st.builds(
    SampleKey, st.lists(frames_st, min_size=1, max_size=6).map(tuple),
    st.sampled_from(["", "MainThread", "worker-1"]), st.integers(0, 50))
windows_st = st.lists(
    st.dictionaries(keys_st, st.integers(1, 10**6), max_size=20), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(windows_st)
def test_generated_windows_decode_to_their_counts(windows: list[dict[SampleKey, int]]) -> None:
    enc, dec = StreamEncoder(target_pid=7), StreamDecoder()
    for seq, counts in enumerate(windows, start=1):
        out = dec.decode(enc.batch(seq, counts), NOW_NS)
        assert out.sample_count == sum(counts.values())
        expected: dict[SampleKey, int] = {}
        for k, n in counts.items():  # pid 0 is the target, so it merges with pid 7
            resolved = SampleKey(k.stack, k.thread, k.pid or 7)
            expected[resolved] = expected.get(resolved, 0) + n
        assert decoded_counts(out) == expected
        assert out.stacks.ids == tuple(stack_id(f) for f in out.stacks.frame_ids)
