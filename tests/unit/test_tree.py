"""The merged call tree: merging, ordering, counts, and the property that it loses nothing."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import Frame, Stack
from pyrometer.collector.model import Profile
from pyrometer.collector.query import tree as tree_mod
from pyrometer.collector.query.tree import FunctionKey, FunctionPaths, Node, build_tree, count_tree
from pyrometer.collector.render.json_tree import tree_json
from pyrometer.collector.render.jsonout import dumps_deep

MAIN = Frame("main", "app.py", 10)
LOAD = Frame("load", "io.py", 3)


def profile(*samples: tuple[Stack, int], service: str = "api") -> Profile:
    return Profile(service, 0, 60_000_000_000, tuple(samples))


def test_root_is_named_after_the_service_and_holds_the_total() -> None:
    tree = build_tree(profile(((MAIN,), 3), ((MAIN, LOAD), 4)))
    assert (tree.name, tree.key, tree.value, tree.self_value) == ("api", None, 7, 0)
    assert build_tree(profile(service="")).name == "root"


def test_frames_merge_by_function_not_by_line() -> None:
    tree = build_tree(
        profile(
            ((MAIN, Frame("load", "io.py", 3)), 2),
            ((Frame("main", "app.py", 11), Frame("load", "io.py", 9)), 5),
        )
    )
    [main] = tree.children
    assert (main.name, main.value, main.self_value) == ("main (app.py)", 7, 0)
    [load] = main.children
    assert (load.name, load.key, load.value, load.self_value) == (
        "load (io.py)",
        FunctionKey("load", "io.py"),
        7,
        7,
    )


def test_shared_and_copied_frame_objects_build_the_same_tree() -> None:
    # the store hands out one Frame object per stored frame; build_tree looks keys up by
    # object, which must not change what it merges
    shared = [((MAIN, LOAD, MAIN), 2), ((MAIN, LOAD), 3), ((LOAD,), 1)]
    copied = [(tuple(Frame(f.name, f.file, f.line) for f in stack), n) for stack, n in shared]
    assert build_tree(profile(*shared)) == build_tree(profile(*copied))
    assert build_tree(profile(*shared)).child(FunctionKey.of(MAIN)) is not None


def test_same_name_in_different_files_stays_apart() -> None:
    tree = build_tree(profile(((Frame("run", "a.py"),), 1), ((Frame("run", "b.py"),), 1)))
    assert [c.name for c in tree.children] == ["run (a.py)", "run (b.py)"]


def test_children_by_descending_value_then_name() -> None:
    kids = [Frame(n, "m.py", 1) for n in ("c", "a", "b", "d")]
    tree = build_tree(profile(*(((MAIN, k), v) for k, v in zip(kids, (5, 5, 9, 1), strict=True))))
    assert [(c.name, c.value) for c in tree.children[0].children] == [
        ("b (m.py)", 9),
        ("a (m.py)", 5),
        ("c (m.py)", 5),
        ("d (m.py)", 1),
    ]


def test_self_value_where_a_function_is_the_leaf() -> None:
    tree = build_tree(profile(((MAIN,), 3), ((MAIN, LOAD), 4)))
    main = tree.children[0]
    assert (main.value, main.self_value) == (7, 3)
    assert main.child(FunctionKey("load", "io.py")) == main.children[0]
    assert main.child(FunctionKey("load", "other.py")) is None


def test_label_without_a_file_is_the_bare_name() -> None:
    tree = build_tree(profile(((Frame("<native>", ""),), 1)))
    assert tree.children[0].name == "<native>"


def test_empty_profile_and_empty_stack() -> None:
    assert build_tree(profile()) == Node("api", 0, 0, None, ())
    tree = build_tree(profile(((), 4), ((MAIN,), 1)))
    assert (tree.value, tree.self_value) == (5, 4)


def test_deep_stacks_do_not_hit_the_recursion_limit() -> None:
    stack = tuple(Frame(f"f{i}", "deep.py", i) for i in range(5000))
    tree = build_tree(profile((stack, 2)))
    paths = list(tree.walk())
    assert len(paths) == 5001
    path, leaf = paths[-1]
    assert len(path) == 5000 and leaf.self_value == 2
    assert tree.to_dict()["value"] == 2


def test_walk_is_depth_first_in_child_order_with_key_paths() -> None:
    tree = build_tree(profile(((MAIN, LOAD), 4), ((LOAD,), 1)))
    assert [(tuple(k.name for k in path), n.value) for path, n in tree.walk()] == [
        ((), 5),
        (("main",), 4),
        (("main", "load"), 4),
        (("load",), 1),
    ]


def test_to_dict_is_the_name_value_children_shape() -> None:
    tree = build_tree(profile(((MAIN, LOAD), 4)))
    assert tree.to_dict() == {
        "name": "api",
        "value": 4,
        "children": [
            {
                "name": "main (app.py)",
                "value": 4,
                "children": [{"name": "load (io.py)", "value": 4, "children": []}],
            }
        ],
    }


frames = st.builds(
    Frame,
    name=st.sampled_from(["main", "f", "g", "a;b", "</script>", 'q"\\é']),
    file=st.sampled_from(["", "x.py", "y.py"]),
    line=st.integers(0, 3),
)
profiles = st.dictionaries(
    st.lists(frames, max_size=6).map(tuple), st.integers(1, 10_000), max_size=12
).map(lambda counts: Profile("svc", 0, 10**9, tuple(counts.items())))


@settings(max_examples=200, deadline=None)
@given(profiles)
def test_tree_accounts_for_every_sample(p: Profile) -> None:
    tree = build_tree(p)
    assert tree.value == p.total
    for _, node in tree.walk():
        assert node.value == node.self_value + sum(c.value for c in node.children)
        values = [(-c.value, c.name) for c in node.children]
        assert values == sorted(values)
        assert len({c.key for c in node.children}) == len(node.children)
    assert sum(n.self_value for _, n in tree.walk()) == p.total


@settings(max_examples=200, deadline=None)
@given(profiles)
def test_the_json_tree_is_the_frozen_trees_dict_encoded(p: Profile) -> None:
    # what the endpoint sends, written straight from the counts
    assert tree_json(p) == dumps_deep(build_tree(p).to_dict())


def _tree_through(p: Profile, paths: FunctionPaths) -> Node:
    top, keys = count_tree(p, paths)
    return tree_mod._freeze(top, "svc", keys)


@settings(max_examples=100, deadline=None)
@given(profiles, profiles, st.integers(0, 12))
def test_trees_built_through_shared_paths_are_each_profiles_own(a: Profile, b: Profile,
                                                                bound: int) -> None:
    # the paths outlive a tree (tree.PATHS): profiles that share stack objects, as the
    # store's windows do, and a bound that makes them start again midway
    shared = FunctionPaths(max_stacks=bound)
    second = dataclasses.replace(b, samples=b.samples + a.samples[::2])
    for p in (a, second, a, second):
        assert _tree_through(p, shared) == _tree_through(p, FunctionPaths()) == build_tree(p)
