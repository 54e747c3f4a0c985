"""The pure parts of Pyroscope's query API: flamebearer layout and label selectors."""

from __future__ import annotations

import pytest

from pyrometer.agent.shared.model import Frame
from pyrometer.collector.api.pyroscope_selector import (
    SelectorError,
    matching,
    parse_selector,
    pyroscope_labels,
)
from pyrometer.collector.model import Profile
from pyrometer.collector.query.tree import build_tree
from pyrometer.collector.render.flamebearer import flamebearer
from pyrometer.collector.storage.label_sets import LabelSet


def _profile(samples: dict[tuple[str, ...], int]) -> Profile:
    return Profile("svc", 0, 10, tuple((tuple(Frame(n, "", 0) for n in stack), count)
                                       for stack, count in samples.items()))


def test_levels_are_offset_total_self_name_quadruples() -> None:
    laid = flamebearer(build_tree(_profile({("a", "b"): 3, ("a", "c"): 1, ("d",): 2})))
    names = list(laid.names)
    assert names[0] == "total" and laid.total == 6 and laid.max_self == 3
    assert laid.levels[0] == (0, 6, 0, 0)
    # level 1: a (4) then d (2), each right after the one before
    assert laid.levels[1] == (0, 4, 0, names.index("a"), 0, 2, 2, names.index("d"))
    # level 2: b and c under a; nothing under d
    assert laid.levels[2] == (0, 3, 3, names.index("b"), 0, 1, 1, names.index("c"))


def test_max_nodes_folds_the_smallest_into_other_and_keeps_totals() -> None:
    samples = {("main", f"f{i}"): i + 1 for i in range(20)}
    laid = flamebearer(build_tree(_profile(samples)), max_nodes=6, scale=10)
    assert laid.total == 10 * sum(samples.values())
    level = laid.levels[2]
    totals = level[1::4]
    assert sum(totals) == laid.total and "other" in laid.names
    assert len(totals) <= 6


SETS = [LabelSet("api", "pod-1", "1.0", '{"zone":"a"}'), LabelSet("api", "pod-2", "1.1", "{}"),
        LabelSet("batch", "", "", "{}")]


@pytest.mark.parametrize(("text", "services"), [
    ("", ["api", "api", "batch"]),
    ("{}", ["api", "api", "batch"]),
    ('{service_name="api"}', ["api", "api"]),
    ('{service_name="api", version!="1.0"}', ["api"]),
    ('{version=~"1\\\\..*"}', ["api", "api"]),
    ('{zone!~"a|b"}', ["api", "batch"]),
    ('{instance=""}', ["batch"]),
    ('{__name__="process_cpu", service_name=~"b.*"}', ["batch"]),
    ('{__profile_type__="process_cpu:cpu:nanoseconds:cpu:nanoseconds", zone="a"}', ["api"]),
    ('{__profile_type__="memory:alloc_space:bytes:space:bytes"}', []),
])
def test_selectors_match_like_prometheus(text: str, services: list[str]) -> None:
    assert [s.service for s in matching(SETS, parse_selector(text))] == services


@pytest.mark.parametrize("text", ['service_name="x"', '{a=b}', '{a="b" c="d"}', '{a=~"("}', '{a=="b"}'])
def test_bad_selectors_say_so(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


def test_a_label_set_in_pyroscope_terms() -> None:
    assert pyroscope_labels(SETS[0]) == {"service_name": "api", "instance": "pod-1", "version": "1.0",
                                         "zone": "a", "__name__": "process_cpu"}
