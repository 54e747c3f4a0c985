"""Differential profiles: function stats, merging, normalisation, and their renderers.

Golden files live in tests/golden/diff.*; after an intended change to a renderer,
rewrite them with ``UPDATE_GOLDEN=1 pytest tests/test_diff.py`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import Frame, Stack
from pyrometer.collector.model import Profile
from pyrometer.collector.query import diff as diff_mod
from pyrometer.collector.query.diff import (
    DiffNode,
    FunctionStat,
    StackFunctions,
    caveats,
    diff_profiles,
    freeze,
    function_stats,
    normalisation,
    pair_tree,
    top_changes,
    tree_changes,
)
from pyrometer.collector.query.tree import FunctionKey, FunctionPaths, Node, build_tree
from pyrometer.collector.render import jsonout
from pyrometer.collector.render.diff_html import render_diff_html
from pyrometer.collector.render.diff_json import pair_tree_text, render_diff_json, tree_json
from pyrometer.collector.render.jsonout import JSONText, dumps_deep, float_text

GOLDEN = Path(__file__).parents[1] / "golden"
S = 1_000_000_000
T0 = 1_700_000_000 * S
HANDLE = Frame("handle", "app/server.py", 10)
PREDICT = Frame("predict", "app/model.py", 20)
RENDER = Frame("render_json", "app/post.py", 30)
MATMUL = Frame("matmul", "app/ops.py", 40)
HANDLE_L, PREDICT_L = "handle (app/server.py)", "predict (app/model.py)"
RENDER_L, MATMUL_L = "render_json (app/post.py)", "matmul (app/ops.py)"


def profile(seconds: int, *samples: tuple[Stack, int], start: int = T0) -> Profile:
    return Profile("api", start, start + seconds * S, tuple(samples))


# 60 s at 100 samples/s: predict 90%, render_json 4%; the 10 s target: render_json 31%,
# a new leaf under predict, and the handler's own time gone.
BASELINE = profile(60, ((HANDLE, PREDICT), 5400), ((HANDLE,), 360), ((HANDLE, RENDER), 240))
TARGET = profile(10, ((HANDLE, PREDICT), 500), ((HANDLE, RENDER), 310),
                 ((HANDLE, PREDICT, MATMUL), 190), start=T0 + 60 * S)


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} changed; see module docstring"


def find(node: DiffNode, *names: str) -> DiffNode:
    for name in names:
        [node] = [c for c in node.children if c.name == name]
    return node


def test_function_stats_count_a_recursive_function_once_per_sample() -> None:
    f1, f2, leaf = Frame("f", "r.py", 1), Frame("f", "r.py", 2), Frame("g", "r.py", 3)
    stats = function_stats(profile(1, ((HANDLE, f1, f2, f1), 3), ((HANDLE, f1, leaf), 2),
                                   ((), 4)))
    assert stats == {
        "f (r.py)": FunctionStat(total=5, self_samples=3),
        "g (r.py)": FunctionStat(total=2, self_samples=2),
        "handle (app/server.py)": FunctionStat(total=5, self_samples=0),
    }
    assert list(stats) == sorted(stats)
    assert function_stats(profile(1)) == {}


def test_windows_of_different_length_with_the_same_rate_show_no_change() -> None:
    base = profile(60, ((HANDLE, PREDICT), 540 * 6), ((HANDLE, RENDER), 60 * 6))
    target = profile(10, ((HANDLE, PREDICT), 540), ((HANDLE, RENDER), 60))
    tree = diff_profiles(base, target)
    for node in _walk(tree):
        assert node.delta == 0 and node.share_delta == 0, node.name
    assert (tree.baseline, tree.target) == (60.0, 60.0)
    assert (find(tree, HANDLE_L, RENDER_L).baseline, tree.baseline_samples) == (6.0, 3600)
    assert top_changes(base, target) == [] and top_changes(base, target, by="value") == []


def test_rates_equal_but_for_float_rounding_are_no_change() -> None:
    # 3 samples in 9 ms and 1 in 3 ms: 333.33333333333337/s against 333.3333333333333/s
    base = profile(1, ((HANDLE,), 3))
    target = dataclasses.replace(profile(1, ((HANDLE,), 1)), end_ns=T0 + 3_000_000)
    base = dataclasses.replace(base, end_ns=T0 + 9_000_000)
    assert diff_profiles(base, target).delta != 0  # the model keeps what it computed
    assert top_changes(base, target, by="value") == []
    assert json.loads(render_diff_json(base, target))["tree"]["delta"] == 0.0


def test_values_are_per_unit_when_units_are_given() -> None:
    # ten times the requests and ten times the samples: the same cost per request
    base = profile(60, ((HANDLE, PREDICT), 200))
    target = profile(10, ((HANDLE, PREDICT), 2000), ((HANDLE, RENDER), 500))
    tree = diff_profiles(base, target, baseline_units=100, target_units=1000)
    predict = find(tree, HANDLE_L, PREDICT_L)
    assert (predict.baseline, predict.target, predict.delta) == (2.0, 2.0, 0.0)
    assert find(tree, HANDLE_L, RENDER_L).target == 0.5
    changes = top_changes(base, target, baseline_units=100, target_units=1000, by="value")
    # the handler includes render_json's new cost; predict's cost per request is unchanged
    assert [(c.function, c.baseline, c.target, c.delta) for c in changes] == [
        (HANDLE_L, 2.0, 2.5, 0.5), (RENDER_L, 0.0, 0.5, 0.5)]
    norm = normalisation(base, target, baseline_units=100, target_units=1000)
    assert (norm.per, norm.baseline, norm.target) == ("unit", 100.0, 1000.0)
    # no requests: nothing to divide by, so no value rather than an infinity
    assert diff_profiles(base, target, baseline_units=0, target_units=1).baseline == 0.0


@pytest.mark.parametrize("units", [(1.0, None), (None, 2.0), (-1.0, 1.0), (float("nan"), 1.0),
                                   (1.0, float("inf"))])
def test_bad_units_are_a_value_error(units: tuple[float | None, float | None]) -> None:
    with pytest.raises(ValueError, match="units"):
        diff_profiles(BASELINE, TARGET, baseline_units=units[0], target_units=units[1])


def test_frames_on_one_side_only_are_nodes_with_zero_on_the_other() -> None:
    tree = diff_profiles(BASELINE, TARGET)
    handle = find(tree, HANDLE_L)
    matmul = find(handle, PREDICT_L, MATMUL_L)  # only in the target
    assert (matmul.baseline_samples, matmul.baseline, matmul.baseline_share) == (0, 0.0, 0.0)
    assert (matmul.target_samples, matmul.target, matmul.target_share) == (190, 19.0, 0.19)
    # the handler's own time is gone, but the baseline-only stack still adds up
    assert handle.baseline_samples - sum(c.baseline_samples for c in handle.children) == 360
    assert [c.name for c in handle.children] == [PREDICT_L, RENDER_L]
    render = find(handle, RENDER_L)
    assert (render.baseline_share, render.target_share) == (0.04, 0.31)
    assert render.delta == pytest.approx(27.0)
    gone = diff_profiles(TARGET, BASELINE)  # the other way round: matmul only in the baseline
    assert find(gone, HANDLE_L, PREDICT_L, MATMUL_L).target_samples == 0


def test_top_changes_rank_by_share_and_name_the_function() -> None:
    changes = top_changes(BASELINE, TARGET)
    assert [c.function for c in changes] == [RENDER_L, PREDICT_L, MATMUL_L]
    render = changes[0]
    assert (render.baseline_share, render.target_share) == (0.04, 0.31)
    assert render.share_delta == pytest.approx(0.27)
    assert (render.baseline, render.target) == (4.0, 31.0)
    assert [c.function for c in top_changes(BASELINE, TARGET, 1)] == [RENDER_L]
    assert top_changes(BASELINE, TARGET, 0) == []


def test_children_order_is_deterministic_by_value_then_name() -> None:
    a, b = Frame("a", "x.py", 1), Frame("b", "x.py", 1)
    one = diff_profiles(profile(1, ((b,), 1)), profile(1, ((a,), 1)))
    assert [c.name for c in one.children] == ["a (x.py)", "b (x.py)"]


def test_empty_windows_are_an_empty_diff() -> None:
    empty = dataclasses.replace(BASELINE, samples=())
    tree = diff_profiles(empty, empty)
    assert (tree.name, tree.baseline, tree.target, tree.baseline_share, tree.children) == (
        "api", 0.0, 0.0, 0.0, ())
    doc = json.loads(render_diff_json(empty, empty))
    assert (doc["baseline_total"], doc["target_total"], doc["top_changes"]) == (0, 0, [])
    assert embedded_data(render_diff_html(empty, empty))["tree"]["children"] == []


def test_deep_stacks_do_not_hit_the_recursion_limit() -> None:
    deep = tuple(Frame(f"f{i}", "deep.py", i) for i in range(5000))
    tree = diff_profiles(profile(1, (deep, 1)), profile(1, (deep[:4000], 2)))
    node = tree
    while node.children:
        node = node.children[0]
    assert node.name == "f4999 (deep.py)" and node.target == 0.0
    # json.loads would recurse too, so look at the text
    for page in (render_diff_json(profile(1, (deep, 1)), profile(1)),
                 render_diff_html(profile(1, (deep, 1)), profile(1))):
        assert page.count('"name":"f') == 5000 and '"name":"f4999 (deep.py)"' in page


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_json_values)
def test_dumps_deep_writes_what_json_dumps_writes(value: object) -> None:
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert dumps_deep(value) == expected
    assert jsonout._walk(value) == expected  # the fallback for documents too deep for json


@settings(max_examples=300, deadline=None)
@given(st.floats())
def test_float_text_writes_what_json_dumps_writes(value: float) -> None:
    assert float_text(value) == json.dumps(value)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(), _json_values, max_size=4), _json_values, st.text())
def test_json_text_in_a_document_goes_in_as_it_is(doc: dict[str, object], tree: object,
                                                  key: str) -> None:
    # a renderer writes its tree as text (tree_text) and puts it in the envelope
    written = JSONText(json.dumps(tree, ensure_ascii=False, separators=(",", ":")))
    expected = json.dumps({**doc, key: tree}, ensure_ascii=False, separators=(",", ":"))
    assert dumps_deep({**doc, key: written}) == expected


def test_dumps_deep_falls_back_for_documents_too_deep_for_json() -> None:
    depth = sys.getrecursionlimit() * 2
    deep: object = {"name": "leaf", "children": []}
    for _ in range(depth):
        deep = {"name": "n", "children": [deep]}
    with pytest.raises(RecursionError):
        json.dumps(deep)
    expected = '{"name":"n","children":[' * depth + '{"name":"leaf","children":[]}' + "]}" * depth
    assert dumps_deep(deep) == expected
    # and from a worker thread, where the API renders
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(dumps_deep, deep).result() == expected


def test_caveats_name_a_rate_or_idle_mismatch() -> None:
    assert caveats(BASELINE, TARGET) == ()
    slow = dataclasses.replace(TARGET, rate_hz=50.0)
    assert "50 Hz" in caveats(BASELINE, slow)[0]
    idle = dataclasses.replace(TARGET, idle_included=True)
    assert "idle" in caveats(BASELINE, idle)[0]
    doc = json.loads(render_diff_json(BASELINE, slow, notice="Replayed"))
    assert doc["notice"] == "Replayed" and len(doc["caveats"]) == 1


def test_golden_json() -> None:
    check_golden("diff.json", render_diff_json(BASELINE, TARGET))


def test_golden_html() -> None:
    check_golden("diff.html", render_diff_html(BASELINE, TARGET))


class _Scripts(HTMLParser):
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
    p = Profile("<b>svc</b>", 0, S, (((Frame(evil, "</SCRIPT>.py", 1),), 3),))
    page = render_diff_html(p, dataclasses.replace(p, samples=()))
    assert len(re.findall("</script", page, re.IGNORECASE)) == 2
    assert "<!--" not in page
    assert embedded_data(page)["tree"]["children"][0]["name"] == f"{evil} (</SCRIPT>.py)"
    assert "<title>&lt;b&gt;svc&lt;/b&gt;" in page


def test_html_is_offline_and_carries_title_notice_and_both_windows() -> None:
    page = render_diff_html(BASELINE, TARGET, notice="Replayed data, not live")
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|https?://|@import", page)
    assert "{{" not in page
    data = embedded_data(page)
    assert data["notice"] == "Replayed data, not live"
    assert (data["baseline_total"], data["target_total"]) == (6000, 1000)
    assert data["title"] == ("api 2023-11-14T22:14:20.000Z .. 2023-11-14T22:14:30.000Z vs "
                             "baseline 2023-11-14T22:13:20.000Z .. 2023-11-14T22:14:20.000Z")
    for feature in ('id="search"', 'id="reset"', 'id="tip"', 'id="notice"', 'id="width"',
                    'id="colour"', ".frame.match"):  # the last from the shared stylesheet
        assert feature in page


# --- properties -------------------------------------------------------------------

_frames = st.builds(Frame, name=st.sampled_from("abc"), file=st.sampled_from(["", "x.py"]),
                    line=st.integers(0, 2))
_profiles = st.builds(
    lambda counts, seconds: Profile("svc", 0, seconds * S, tuple(counts.items())),
    st.dictionaries(st.lists(_frames, max_size=4).map(tuple), st.integers(1, 1000), max_size=6),
    st.integers(1, 3600),
)


@settings(max_examples=150, deadline=None)
@given(_profiles, _profiles)
def test_each_side_of_the_diff_is_that_sides_own_tree(base: Profile, target: Profile) -> None:
    tree = diff_profiles(base, target)
    assert _side(tree, "baseline") == _plain(build_tree(base))
    assert _side(tree, "target") == _plain(build_tree(target))
    for node in _walk(tree):
        assert node.baseline == pytest.approx(node.baseline_samples * S / base.duration_ns)
        assert sum(c.target_samples for c in node.children) <= node.target_samples


def _walk(root: DiffNode) -> list[DiffNode]:
    out, pending = [], [root]
    while pending:
        node = pending.pop()
        out.append(node)
        pending.extend(node.children)
    return out


def _side(node: DiffNode, side: str) -> Any:
    kids = sorted((_side(c, side) for c in node.children if getattr(c, f"{side}_samples")),
                  key=repr)
    return (node.name, getattr(node, f"{side}_samples"), kids)


def _plain(node: Node) -> Any:
    return (node.name, node.value, sorted((_plain(c) for c in node.children), key=repr))


def _stats_by_stack(p: Profile) -> dict[str, tuple[int, int]]:
    """function_stats by its definition: each sample once per function on its stack."""
    totals: dict[str, int] = {}
    leaves: dict[str, int] = {}
    for stack, count in p.samples:
        for label in {FunctionKey.of(f).label for f in stack}:
            totals[label] = totals.get(label, 0) + count
        if stack:
            leaf = FunctionKey.of(stack[-1]).label
            leaves[leaf] = leaves.get(leaf, 0) + count
    return {label: (n, leaves.get(label, 0)) for label, n in sorted(totals.items())}


# recursion, one function on two lines, and a name that reads like another's label
_frames = st.builds(Frame, name=st.sampled_from(["main", "f", "g", "f (x.py)"]),
                    file=st.sampled_from(["", "x.py"]), line=st.integers(0, 2))
_recursive = st.dictionaries(st.lists(_frames, max_size=7).map(tuple), st.integers(0, 50),
                             max_size=10).map(
    lambda counts: Profile("svc", 0, 10**9, tuple(counts.items())))


@settings(max_examples=300, deadline=None)
@given(_recursive)
def test_function_stats_from_the_tree_count_each_sample_once_per_function(p: Profile) -> None:
    got = function_stats(p)
    assert list(got) == list(_stats_by_stack(p))
    assert {label: (s.total, s.self_samples) for label, s in got.items()} == _stats_by_stack(p)


@settings(max_examples=200, deadline=None)
@given(_recursive, _recursive)
def test_function_stats_sharing_stacks_between_profiles_count_each_alone(
        first: Profile, second: Profile) -> None:
    # the second shares stack objects with the first (as one store's profiles do) and
    # has stacks of its own; each profile's stats are its own, whichever came first
    second = dataclasses.replace(second, samples=second.samples + first.samples[::2])
    shared = StackFunctions()
    assert function_stats(first, shared) == function_stats(first)
    assert function_stats(second, shared) == function_stats(second)
    assert function_stats(first, shared) == function_stats(first)


@settings(max_examples=150, deadline=None)
@given(_recursive, _recursive, st.sampled_from([None, (0.0, 3.0), (7.0, 2.0)]))
def test_json_tree_from_the_pair_tree_is_the_frozen_trees(base: Profile, target: Profile,
                                                           units: tuple[float, float] | None
                                                           ) -> None:
    # what the endpoint sends (pair_tree_text) against the DiffNodes' own rendering,
    # encoded, on stacks that share and do not share objects between the sides
    target = dataclasses.replace(target, start_ns=0, end_ns=3 * S,
                                 samples=target.samples + base.samples[:2])
    b_units, t_units = units or (None, None)
    norm = normalisation(base, target, baseline_units=b_units, target_units=t_units)
    tree = pair_tree(base, target, norm)
    assert pair_tree_text(tree) == dumps_deep(tree_json(freeze(tree)))
    # through paths of its own that start again midway, rather than the shared tree.PATHS
    assert pair_tree_text(pair_tree(base, target, norm, FunctionPaths(max_stacks=1))) == \
        pair_tree_text(tree)
    assert pair_tree_text(tree) == dumps_deep(tree_json(diff_profiles(
        base, target, baseline_units=b_units, target_units=t_units)))
    # and its function changes are those of each side's own stacks (function_stats)
    by_stacks = diff_mod._changes(function_stats(base), function_stats(target),
                                  (base.total, target.total), norm, 1000, "share")
    assert tree_changes(tree, 1000) == by_stacks
