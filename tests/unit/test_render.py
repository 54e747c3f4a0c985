"""Renderers: golden output, each format's own rules, the registry, and safety.

Golden files live in tests/golden/; after an intended change to a renderer, rewrite
them with ``UPDATE_GOLDEN=1 pytest tests/test_render.py`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import Frame
from pyrometer.collector.model import Profile
from pyrometer.collector.render.folded import (
    escape_frame,
    parse_folded,
    render_folded,
    stack_text,
    unescape_frame,
)
from pyrometer.collector.render.html import render_html
from pyrometer.collector.render.json_tree import render_json
from pyrometer.collector.render.pprof import pprof_message, render_pprof
from pyrometer.collector.render.registry import FORMATS, UnknownFormat, render
from pyrometer.collector.render.speedscope import render_speedscope
from pyrometer.proto import profile_pb2

GOLDEN = Path(__file__).parents[1] / "golden"
SCHEMA = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "speedscope-file-format-schema.json").read_text()
)

HANDLE = Frame("handle", "app/server.py", 42)
PREDICT = Frame("predict", "app/model.py", 17)
# Hand-checkable: 10 samples in one minute at 100 Hz; predict is sampled on two lines
# (one function in the tree, two frames elsewhere) and one frame name holds a ';'.
SMALL = Profile(
    service="api",
    start_ns=1_700_000_000_000_000_000,
    end_ns=1_700_000_060_000_000_000,
    samples=(
        ((HANDLE, PREDICT, Frame("matmul", "app/ops.py", 8)), 5),
        ((HANDLE, Frame("predict", "app/model.py", 19)), 3),
        ((HANDLE, Frame("parse;json", "app/io.py", 5)), 2),
    ),
)
EMPTY = dataclasses.replace(SMALL, samples=())


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} changed; see module docstring"


@pytest.mark.parametrize(
    ("name", "renderer"),
    [
        ("small.folded", render_folded),
        ("small.json", render_json),
        ("small.speedscope.json", render_speedscope),
        ("small.html", render_html),
    ],
)
def test_golden_text_formats(name: str, renderer: object) -> None:
    assert callable(renderer)
    check_golden(name, renderer(SMALL))


def test_golden_pprof_as_text_proto() -> None:
    check_golden("small.pprof.txt", text_format.MessageToString(pprof_message(SMALL)))


# --- registry ---------------------------------------------------------------------


def test_registry_names_every_format() -> None:
    assert set(FORMATS) == {"json", "folded", "speedscope", "pprof", "html"}
    for entry in FORMATS.values():
        assert entry.content_type and not entry.extension.startswith(".")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("profile", [SMALL, EMPTY], ids=["small", "empty"])
def test_render_gives_bytes_and_content_type(fmt: str, profile: Profile) -> None:
    body, content_type = render(profile, fmt, notice="replayed")
    assert isinstance(body, bytes)
    assert body or (fmt == "folded" and profile is EMPTY)  # no stacks, no lines
    assert content_type == FORMATS[fmt].content_type
    assert FORMATS[fmt].render(profile) == FORMATS[fmt].render(profile)  # deterministic


def test_unknown_format_is_a_clear_value_error() -> None:
    with pytest.raises(UnknownFormat, match=r"'svg'.*json, folded, speedscope, pprof, html"):
        render(SMALL, "svg")
    assert issubclass(UnknownFormat, ValueError)


# --- folded -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["a;b", "%3B", "50%;", "x\ny\r", "", "plain (f.py:1)"])
def test_folded_escape_round_trips(text: str) -> None:
    escaped = escape_frame(text)
    assert ";" not in escaped and "\n" not in escaped and "\r" not in escaped
    assert unescape_frame(escaped) == text


def test_folded_semicolon_in_a_name_keeps_the_frame_count() -> None:
    [(frames, count)] = parse_folded(
        render_folded(Profile("s", 0, 1, (((Frame("a;b", "f.py", 2), Frame("c", "g.py")), 7),)))
    )
    assert frames == ("a;b (f.py:2)", "c (g.py)") and count == 7


def test_folded_empty_profile_is_empty_text() -> None:
    assert render_folded(EMPTY) == ""


# --- pprof ------------------------------------------------------------------------


def decode_pprof(data: bytes) -> profile_pb2.Profile:
    message = profile_pb2.Profile()
    message.ParseFromString(gzip.decompress(data))
    return message


def check_pprof_rules(p: Profile, message: profile_pb2.Profile) -> None:
    strings = message.string_table
    assert strings[0] == ""
    assert len(set(strings)) == len(strings)
    kinds = [(strings[t.type], strings[t.unit]) for t in message.sample_type]
    time_kind = "wall" if p.idle_included else "cpu"
    assert kinds == [("samples", "count"), (time_kind, "nanoseconds")]
    period = message.period_type
    assert (strings[period.type], strings[period.unit]) == (time_kind, "nanoseconds")
    assert message.period == p.period_ns and message.time_nanos == p.start_ns
    assert message.duration_nanos == p.duration_ns
    functions = {f.id: f for f in message.function}
    locations = {loc.id: loc for loc in message.location}
    assert 0 not in functions and 0 not in locations
    assert len(functions) == len(message.function) and len(locations) == len(message.location)
    for loc in message.location:
        assert len(loc.line) == 1 and loc.line[0].function_id in functions
    for f in message.function:
        assert 0 <= f.name < len(strings) and 0 <= f.filename < len(strings)
    assert len(message.sample) == len(p.samples)
    for sample, (stack, count) in zip(message.sample, p.samples, strict=True):
        assert len(sample.value) == len(message.sample_type)
        assert list(sample.value) == [count, count * p.period_ns]
        leaf_first = [locations[i] for i in sample.location_id]
        names = [strings[functions[loc.line[0].function_id].name] for loc in leaf_first]
        assert names == [f.name for f in reversed(stack)]
        assert [loc.line[0].line for loc in leaf_first] == [f.line for f in reversed(stack)]


@pytest.mark.parametrize("idle", [False, True])
def test_pprof_follows_the_format_rules(idle: bool) -> None:
    p = dataclasses.replace(SMALL, idle_included=idle)
    message = decode_pprof(render_pprof(p))
    check_pprof_rules(p, message)
    assert message.period == 10_000_000 and message.duration_nanos == 60_000_000_000
    # handle, predict, matmul, parse;json: predict on two lines is one function
    assert len(message.function) == 4 and len(message.location) == 5


def test_pprof_notice_is_a_comment_and_empty_profile_decodes() -> None:
    message = decode_pprof(render_pprof(EMPTY, notice="replayed data"))
    check_pprof_rules(EMPTY, message)
    assert [message.string_table[i] for i in message.comment] == ["replayed data"]


# --- speedscope -------------------------------------------------------------------


@pytest.mark.parametrize("profile", [SMALL, EMPTY], ids=["small", "empty"])
def test_speedscope_validates_against_the_official_schema(profile: Profile) -> None:
    document = json.loads(render_speedscope(profile, notice="replayed"))
    jsonschema.validate(document, SCHEMA)
    [sampled] = document["profiles"]
    assert sum(sampled["weights"]) == sampled["endValue"] == profile.total
    assert len(sampled["samples"]) == len(sampled["weights"])


def test_speedscope_frames_are_indexed_root_first() -> None:
    document = json.loads(render_speedscope(SMALL))
    frames = document["shared"]["frames"]
    first = [frames[i] for i in document["profiles"][0]["samples"][0]]
    assert first == [
        {"name": "handle", "file": "app/server.py", "line": 42},
        {"name": "predict", "file": "app/model.py", "line": 17},
        {"name": "matmul", "file": "app/ops.py", "line": 8},
    ]


# --- json and html ----------------------------------------------------------------


def test_json_envelope() -> None:
    document = json.loads(render_json(SMALL, notice="replayed"))
    assert document["total"] == document["tree"]["value"] == 10
    assert (document["service"], document["notice"], document["unit"]) == (
        "api",
        "replayed",
        "samples",
    )
    assert json.loads(render_json(EMPTY))["tree"] == {"name": "api", "value": 0, "children": []}


class _Scripts(HTMLParser):
    """Collects what a browser would see as script elements and their text."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self._open = dict(attrs)
            self.scripts.append((self._open, ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = None


def embedded_data(page: str) -> Any:
    parser = _Scripts()
    parser.feed(page)
    [data] = [text for attrs, text in parser.scripts if attrs.get("type") == "application/json"]
    assert len(parser.scripts) == 2  # the data and the viewer, nothing injected
    return json.loads(data)


def test_html_script_end_in_a_frame_name_cannot_break_out() -> None:
    evil = "</script><script>alert(1)</script><!--"
    p = Profile("<b>svc</b>", 0, 1, (((Frame(evil, "</SCRIPT>.py", 1),), 3),))
    page = render_html(p)
    assert len(re.findall("</script", page, re.IGNORECASE)) == 2
    assert "<!--" not in page
    data = embedded_data(page)
    assert data["tree"]["children"][0]["name"] == f"{evil} (</SCRIPT>.py)"
    assert "<title>&lt;b&gt;svc&lt;/b&gt;" in page


def test_html_is_offline_and_carries_title_notice_and_tree() -> None:
    page = render_html(SMALL, notice="Replayed data, not live")
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|https?://|@import", page)
    data = embedded_data(page)
    assert data["notice"] == "Replayed data, not live" and data["total"] == 10
    assert str(data["title"]).startswith("api 2023-11-14T22:13:20Z .. 2023-11-14T22:14:20Z")
    for feature in ('id="search"', 'id="reset"', 'id="tip"', 'id="notice"', "matchedShare"):
        assert feature in page
    assert embedded_data(render_html(EMPTY))["notice"] is None


# --- properties -------------------------------------------------------------------

frames = st.builds(
    Frame,
    name=st.text(st.sampled_from("ab;%\n </>"), min_size=1, max_size=6),
    file=st.sampled_from(["", "x.py", "a;b.py"]),
    line=st.integers(0, 3),
)
profiles = st.builds(
    lambda counts, rate, idle: Profile(
        "svc", 10**18, 10**18 + 10**9, tuple(counts.items()), rate, idle
    ),
    st.dictionaries(
        st.lists(frames, min_size=1, max_size=5).map(tuple), st.integers(1, 10**6), max_size=8
    ),
    st.sampled_from([100.0, 19.0, 0.0]),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(profiles)
def test_folded_sums_to_the_total_and_round_trips(p: Profile) -> None:
    parsed = parse_folded(render_folded(p))
    assert sum(count for _, count in parsed) == p.total
    expected: dict[tuple[str, ...], int] = {}
    for stack, count in p.samples:
        key = tuple(unescape_frame(f) for f in stack_text(stack).split(";"))
        expected[key] = expected.get(key, 0) + count
    assert dict(parsed) == expected


@settings(max_examples=75, deadline=None)
@given(profiles)
def test_pprof_and_speedscope_stay_valid(p: Profile) -> None:
    check_pprof_rules(p, decode_pprof(render_pprof(p)))
    jsonschema.validate(json.loads(render_speedscope(p)), SCHEMA)


def test_every_format_renders_the_deepest_stack_ingest_accepts() -> None:
    # 512 frames is collector/rows.DecodeLimits' stack depth: json.dumps of such a tree
    # would overflow Python's recursion limit, so the JSON writers must not recurse
    from pyrometer.agent.shared.model import Frame
    from pyrometer.collector.model import Profile
    from pyrometer.collector.render.registry import FORMATS, render

    deep = tuple(Frame(f"f{i}", "deep.py", i + 1) for i in range(512))
    profile = Profile("svc", 0, 10**9, ((deep, 3),))
    for fmt in FORMATS:
        body, _ = render(profile, fmt)
        assert body
