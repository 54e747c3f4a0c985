"""The py-spy raw-format parser: fixed lines as py-spy 0.4.3 writes them, and round trips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pyrometer.agent.shared.model import Frame, SampleKey
from pyrometer.agent.stacks.parser import (
    RawParser,
    aggregate,
    format_line,
    parse_frame,
    parse_stack,
)

PLAIN = "<module> (tgt.py:12);middle (tgt.py:7);leaf_work (tgt.py:4) 173"
LEAF = (
    Frame("<module>", "tgt.py", 12),
    Frame("middle", "tgt.py", 7),
    Frame("leaf_work", "tgt.py", 4),
)


def parse(text: str, target_pid: int = 0) -> tuple[dict[SampleKey, int], int]:
    parser = RawParser(target_pid)
    return aggregate(parser.parse_text(text)), parser.malformed


def test_plain_line() -> None:
    assert parse(PLAIN) == ({SampleKey(LEAF): 173}, 0)


def test_thread_pseudo_frame_new_and_old_style() -> None:
    new = parse("thread (2918): MainThread;" + PLAIN)[0]
    assert new == {SampleKey(LEAF, thread="MainThread (2918)"): 173}
    old = parse("thread (0x7F12AB);" + PLAIN)[0]
    assert old == {SampleKey(LEAF, thread="0x7F12AB"): 173}


def test_a_function_named_thread_is_a_frame() -> None:
    assert parse_stack("thread (t.py:3);" + PLAIN[:-4]).stack == (Frame("thread", "t.py", 3), *LEAF)


def test_process_chain_gives_the_last_pid() -> None:
    line = 'process 2989:"/usr/bin/python3 mp.py";process 3032:"/usr/bin/python3 mp.py";'
    keys = parse(line + "thread (3032): MainThread;" + PLAIN)[0]
    assert keys == {SampleKey(LEAF, thread="MainThread (3032)", pid=3032): 173}


def test_target_pid_becomes_zero() -> None:
    keys = parse('process 2989:"python3 mp.py";' + PLAIN, target_pid=2989)[0]
    assert keys == {SampleKey(LEAF, pid=0): 173}


def test_frame_shapes() -> None:
    assert parse_frame("f (a.py:3)") == Frame("f", "a.py", 3)
    assert parse_frame("0x7f204fa4524a (libc.so.6)") == Frame("0x7f204fa4524a", "libc.so.6", 0)
    assert parse_frame("just_a_name") == Frame("just_a_name", "", 0)
    assert parse_frame("f (/srv/my app (v2)/x.py:9)") == Frame("f", "/srv/my app (v2)/x.py", 9)
    assert parse_frame("f (C:\\app\\x.py:9)") == Frame("f", "C:\\app\\x.py", 9)


def test_semicolons_inside_file_and_cmdline_are_rejoined() -> None:
    key = parse_stack('process 7:"python -c import a; a.run()";<lambda> (/tmp/a;b.py:3);g (c.py:1)')
    assert key.pid == 7
    assert key.stack == (Frame("<lambda>", "/tmp/a;b.py", 3), Frame("g", "c.py", 1))


def test_cmdline_with_newlines_spans_lines() -> None:
    text = 'process 5:"python -c def f():\n    while True: f()\nf()";' + PLAIN + "\n" + PLAIN
    assert parse(text) == ({SampleKey(LEAF, pid=5): 173, SampleKey(LEAF): 173}, 0)
    cut = 'process 5:"python -c def f():\n' + 'process 5:"python x.py";' + PLAIN
    assert parse(cut) == ({SampleKey(LEAF, pid=5): 173}, 1)
    assert parse('process 5:"python -c x\nstill open') == ({}, 1)


def test_semicolon_in_a_bare_name_splits_it() -> None:
    # documented limit: the format cannot tell this from two frames
    assert parse_stack("odd;name (x.py:1)").stack == (Frame("odd", ""), Frame("name", "x.py", 1))


def test_malformed_lines_are_counted_and_skipped() -> None:
    text = "\n".join([PLAIN, "no_count_here", "f (a.py:1) -3", "f (a.py:1) 12x", "", PLAIN])
    parser = RawParser()
    assert aggregate(parser.parse_text(text)) == {SampleKey(LEAF): 346}
    assert parser.malformed == 3 and parser.first_malformed == "no_count_here"


def test_an_empty_stack_is_a_sample() -> None:
    assert parse(" 5\nthread (7): T 2") == ({SampleKey(()): 5, SampleKey((), thread="T (7)"): 2}, 0)


def test_zero_counts_are_dropped_and_crlf_accepted() -> None:
    assert parse(PLAIN.replace("173", "0") + "\r\n" + PLAIN + "\r\n") == ({SampleKey(LEAF): 173}, 0)


names = st.one_of(
    st.sampled_from(["<module>", "<lambda>", "<listcomp>", "run", "forward"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,12}", fullmatch=True),
)
# file paths may hold spaces, parentheses, colons and semicolons, but no ")" right before a ";"
files = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters=")"),
    min_size=1,
    max_size=20,
)
frames = st.builds(Frame, names, files, st.integers(1, 100_000))
threads = st.one_of(
    st.just(""),
    st.builds(
        lambda n, t: f"{n} ({t})",
        st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,10}", fullmatch=True),
        st.integers(1, 2**22),
    ),
    st.integers(1, 2**48).map(lambda t: f"0x{t:X}"),
)
keys = st.builds(SampleKey, st.lists(frames, max_size=6).map(tuple), threads, st.integers(0, 2**22))


@given(st.dictionaries(keys, st.integers(1, 10**9), max_size=8), st.text(max_size=30))
def test_round_trip(counts: dict[SampleKey, int], cmdline: str) -> None:
    cmdline = cmdline.replace('"', "").replace("\r", " ")
    text = "\n".join(format_line(k, c, cmdline=cmdline) for k, c in counts.items())
    assert parse(text) == (counts, 0)
