"""Agent encoder -> collector decoder round trips: what the agent saw is what is stored."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Frame, ProfileWindow, SampleKey
from pyrometer.agent.ship.encoder import AgentIdentity, StreamEncoder, encode_standalone
from pyrometer.collector.ingest.decode import StreamDecoder
from support.ingest_builder import BASE_NS, NOW_NS, decoded_counts

IDENTITY = AgentIdentity("agent-1", "svc", "pod-1", "host-1", 100, (("version", "1.2"),))
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
frames = st.builds(Frame, text, text, st.integers(0, 100_000))
keys = st.builds(SampleKey, st.lists(frames, max_size=12).map(tuple), text,
                 st.integers(0, 2**31 - 1))
windows = st.lists(st.dictionaries(keys, st.integers(1, 10_000), max_size=20),
                   min_size=1, max_size=4)
# Deep stacks over a few frames share long prefixes, as a real program's do.
few_frames = st.sampled_from([Frame("main", "app.py", 1), Frame("step", "app.py", 5),
                              Frame("a", "app.py", 2), Frame("b", "lib.py", 3)])
branching_keys = st.builds(SampleKey, st.lists(few_frames, max_size=30).map(tuple),
                           st.sampled_from(["", "MainThread"]), st.sampled_from([0, 0, 7]))
branching_windows = st.lists(st.dictionaries(branching_keys, st.integers(1, 50), max_size=30),
                             min_size=1, max_size=4)


def window(i: int, counts: dict[SampleKey, int]) -> ProfileWindow:
    start = BASE_NS + i * 10 * NANOS_PER_SECOND
    return ProfileWindow(start, start + 10 * NANOS_PER_SECOND, 100.0, counts)


@settings(max_examples=60, deadline=None)
@given(windows)
def test_every_window_decodes_to_what_was_encoded(counts_per_window: list[dict[SampleKey, int]]
                                                  ) -> None:
    encoder, decoder = StreamEncoder(IDENTITY), StreamDecoder()
    for i, counts in enumerate(counts_per_window):
        out = decoder.decode(encoder.encode(i + 1, window(i, counts)), NOW_NS)
        # the collector stores pid 0 ("the target itself") as the target's pid
        expected = {SampleKey(k.stack, k.thread, k.pid or 100): 0 for k in counts}
        for key, count in counts.items():
            expected[SampleKey(key.stack, key.thread, key.pid or 100)] += count
        assert decoded_counts(out) == expected
        assert out.seq == i + 1
    assert decoder.table_sizes == encoder.table_sizes


def test_a_repeated_stack_is_sent_once_per_stream() -> None:
    counts = {SampleKey((Frame("main", "app.py", 1), Frame("work", "app.py", 9)), "T"): 5}
    encoder = StreamEncoder(IDENTITY)
    first = encoder.encode(1, window(0, counts))
    second = encoder.encode(2, window(1, counts))
    assert len(first.dictionary.stacks) == 1 and len(first.dictionary.frames) == 2
    assert not second.dictionary.strings and not second.dictionary.stacks
    assert list(second.profile.stack_ids) == list(first.profile.stack_ids)
    # a new stream (reconnect) starts its dictionary again
    fresh = StreamEncoder(IDENTITY).encode(3, window(2, counts))
    assert fresh.dictionary.stacks == first.dictionary.stacks


def test_steady_state_batches_are_small() -> None:
    counts = {SampleKey(tuple(Frame(f"f{d}", "pkg/module.py", d) for d in range(depth)), ""): 7
              for depth in range(1, 40)}
    encoder = StreamEncoder(IDENTITY)
    first = len(encoder.encode(1, window(0, counts)).SerializeToString())
    steady = len(encoder.encode(2, window(1, counts)).SerializeToString())
    assert steady < first / 5


def _expected(counts: dict[SampleKey, int]) -> dict[SampleKey, int]:
    return {SampleKey(k.stack, k.thread, k.pid or 100): n for k, n in counts.items()}


@settings(max_examples=60, deadline=None)
@given(branching_windows)
def test_prefix_coded_stacks_decode_to_what_was_encoded(
        counts_per_window: list[dict[SampleKey, int]]) -> None:
    encoder, decoder = StreamEncoder(IDENTITY), StreamDecoder()
    for i, counts in enumerate(counts_per_window):
        batch = encoder.encode(i + 1, window(i, counts))
        for stack in batch.dictionary.stacks:
            assert stack.keep == 0 or stack.keep >= 2  # a prefix is used only when it pays
        assert list(batch.profile.stack_ids) in ([], sorted(batch.profile.stack_ids))
        assert decoded_counts(decoder.decode(batch, NOW_NS)) == _expected(counts)
    assert decoder.table_sizes == encoder.table_sizes


@settings(max_examples=40, deadline=None)
@given(branching_windows, branching_windows)
def test_a_spooled_batch_reencoded_onto_a_live_stream_decodes_the_same(
        live: list[dict[SampleKey, int]], spooled: list[dict[SampleKey, int]]) -> None:
    encoder, decoder = StreamEncoder(IDENTITY), StreamDecoder()
    for i, counts in enumerate(live):
        decoder.decode(encoder.encode(i + 1, window(i, counts)), NOW_NS)
    data = encode_standalone(IDENTITY, 100, window(9, spooled[0]))
    out = decoder.decode(encoder.reencode(data), NOW_NS)
    assert decoded_counts(out) == _expected(spooled[0])
    assert decoder.table_sizes == encoder.table_sizes


def test_a_new_stack_sends_only_what_follows_its_longest_known_prefix() -> None:
    trunk = tuple(Frame(f"f{d}", "app.py", d) for d in range(20))
    leaves = [trunk + (Frame(f"leaf{i}", "app.py", 99),) for i in range(3)]
    encoder = StreamEncoder(IDENTITY)
    first = encoder.encode(1, window(0, {SampleKey(leaves[0]): 1}))
    second = encoder.encode(2, window(1, {SampleKey(s): 1 for s in leaves[1:]}))
    assert [(s.back, s.keep, len(s.frames)) for s in first.dictionary.stacks] == [(0, 0, 21)]
    # stream ids 1 and 2: both start with stack 0's trunk, the second via the first
    assert [(s.back, s.keep, len(s.frames)) for s in second.dictionary.stacks] == [
        (1, 20, 1), (1, 20, 1)]
