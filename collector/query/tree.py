"""Merged call tree of a Profile: the shape every flame graph is drawn from.

Frames are merged by function identity, ``(name, file)``: the same function called from
the same path is one node whatever line it was on when sampled, which is what a reader
of a flame graph expects. Each node keeps that identity as ``key`` so that two trees (two
windows, or a release and its baseline) can later be matched node by node, and counts
stay raw sample counts: a diff normalises each side by its own root value (or by its
window's duration) rather than by anything baked in here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pyrometer.agent.shared.model import Frame, Stack
from pyrometer.collector.model import Profile


@dataclass(frozen=True, slots=True, order=True)
class FunctionKey:
    """Identity of a function across samples and across windows."""

    name: str
    file: str

    @classmethod
    def of(cls, frame: Frame) -> FunctionKey:
        return cls(frame.name, frame.file)

    @property
    def label(self) -> str:
        """What a flame graph shows: ``name (file)``, or the bare name when no file is known."""
        return f"{self.name} ({self.file})" if self.file else self.name


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the merged call tree.

    ``value`` counts the samples in which this call path was on the stack (its own and
    its callees'), ``self_value`` those in which it was the leaf. ``children`` are ordered
    by descending value, then label, then file, so every rendering is deterministic.
    ``key`` is None only for the root, which stands for the whole profile.
    """

    name: str
    value: int
    self_value: int
    key: FunctionKey | None = None
    children: tuple[Node, ...] = field(default=())

    def child(self, key: FunctionKey) -> Node | None:
        """The child for ``key``, if this path ever called it."""
        return next((c for c in self.children if c.key == key), None)

    def walk(self) -> Iterator[tuple[tuple[FunctionKey, ...], Node]]:
        """Every node below and including this one, with its path of keys, depth first.

        Iterative, because the collector accepts stacks deeper than Python's recursion
        limit.
        """
        pending: list[tuple[tuple[FunctionKey, ...], Node]] = [((), self)]
        while pending:
            path, node = pending.pop()
            yield path, node
            for c in reversed(node.children):
                assert c.key is not None
                pending.append(((*path, c.key), c))

    def to_dict(self) -> dict[str, object]:
        """The ``{name, value, children}`` shape that d3-flame-graph and our HTML read."""
        return _to_dict(self)


class CountNode:
    """A node of a count tree: mutable, frozen into a Node once all samples are in
    (diff.py's PairNode is the same with two windows' counts)."""

    __slots__ = ("children", "self_value", "value")

    def __init__(self) -> None:
        self.value = 0
        self.self_value = 0
        # by the index of the child's FunctionKey in FunctionIndex.keys: an int hashes in C
        self.children: dict[int, CountNode] = {}


class FunctionIndex:
    """One index per distinct function, looked up once per distinct Frame object.

    A profile's stacks share their Frame objects (one per stored frame), so most frames
    are found by id; building and hashing a FunctionKey per frame of every stack was
    most of the tree's time. A frame not seen before is found by its (name, file): frames
    differ by line, so a fleet's hour holds some 15,000 frames of a few dozen functions,
    and a FunctionKey is built once per function, not once per frame.
    """

    __slots__ = ("by_frame", "files", "index", "keys", "labels")

    def __init__(self) -> None:
        # id(frame) -> index; whoever holds the index keeps its frames alive (the profile
        # it was built for, or FunctionPaths' entries)
        self.by_frame: dict[int, int] = {}
        self.index: dict[tuple[str, str], int] = {}  # (name, file) -> index
        self.keys: list[FunctionKey] = []
        self.labels: list[str] = []
        self.files: list[str] = []

    def of(self, frame: Frame) -> int:
        found = self.by_frame.get(id(frame))
        if found is not None:
            return found
        identity = (frame.name, frame.file)
        found = self.index.get(identity)
        if found is None:
            key = FunctionKey(*identity)
            found = self.index[identity] = len(self.keys)
            self.keys.append(key)
            self.labels.append(key.label)
            self.files.append(key.file)
        self.by_frame[id(frame)] = found
        return found


def root_name(profile: Profile) -> str:
    """The root's label: the service, or ``root`` for a profile with no service name."""
    return profile.service or "root"


def build_tree(profile: Profile) -> Node:
    """Merge ``profile``'s stacks into one call tree rooted at the service.

    The root's value equals ``profile.total``; a sample with an empty stack counts as
    the root's own time.
    """
    top, keys = count_tree(profile)
    return _freeze(top, root_name(profile), keys)


def by_value(node: CountNode, keys: FunctionIndex) -> Iterable[tuple[int, CountNode]]:
    """``node``'s children (by key index) in `Node.children`' order: by descending value,
    then label, then file. Most nodes of a deep tree have one child, which needs no sort."""
    children = node.children.items()
    if len(children) < 2:
        return children
    labels, files = keys.labels, keys.files
    return sorted(children, key=lambda kv: (-kv[1].value, labels[kv[0]], files[kv[0]]))


class FunctionPaths:
    """Each stack's functions, root first, as indices into one FunctionIndex: found once
    per stack object and kept from one call to the next.

    The store hands out one object per stack for as long as its stack cache holds it,
    so a flame graph or diff of a window whose stacks an earlier one read finds each
    stack's path ready, where looking up every frame of every stack was about half of
    building the tree (an hour of the bench's fleet: 4,000 stacks, 124,000 frames).
    Entries keep their stack alive, so no other object takes its id while they live.
    Bounded as the store's cache is: past `max_stacks` it starts again empty, with a new
    index (one already handed out stays as it was: an index only grows).

    Callers on several threads share one: each holds `lock` while it uses it. The work
    it guards is pure Python, which the GIL would serialise anyway.

    Memory: about 0.7 KB a stack of some 30 frames (its path, its entry, the index's
    share; measured with tracemalloc on the bench's hour), and an entry keeps its stack
    alive after the store's cache lets it go: at the bound, some 35 MB.
    """

    def __init__(self, max_stacks: int = 50_000) -> None:
        self.max_stacks = max_stacks
        self.lock = threading.Lock()
        self.keys = FunctionIndex()
        self.paths: dict[int, tuple[Stack, tuple[int, ...]]] = {}

    def of(self, stack: Stack) -> tuple[int, ...]:
        """The stack's path (`paths` holds the ones already found). Call with `lock` held."""
        found = self.paths.get(id(stack))
        if found is None:
            key_of = self.keys.of
            found = self.paths[id(stack)] = (stack, tuple([key_of(frame) for frame in stack]))
        return found[1]

    def trim(self) -> None:
        """Start again empty if it has grown past its bound. Call with `lock` held."""
        if len(self.paths) > self.max_stacks:
            self.keys = FunctionIndex()
            self.paths = {}


# the paths every tree of this process is built from
PATHS = FunctionPaths()


def count_tree(profile: Profile, paths: FunctionPaths = PATHS
               ) -> tuple[CountNode, FunctionIndex]:
    """``profile``'s stacks merged into a count tree (children by key index, unordered),
    and the index of the functions its keys stand for: what `build_tree` freezes and the
    JSON renderer writes out directly."""
    top = CountNode()
    with paths.lock:
        paths.trim()
        # paths.of inlined for the stacks seen before (nearly all): this loop runs once
        # per stack, and its inner loop once per frame
        known, path_of = paths.paths, paths.of
        for stack, count in profile.samples:
            top.value += count
            node = top
            found = known.get(id(stack))
            for k in found[1] if found is not None else path_of(stack):
                child = node.children.get(k)
                if child is None:
                    child = node.children[k] = CountNode()
                child.value += count
                node = child
            node.self_value += count
        return top, paths.keys


def _sort_key(node: Node) -> tuple[int, str, str]:
    assert node.key is not None
    return (-node.value, node.name, node.key.file)


def _freeze(top: CountNode, name: str, keys: FunctionIndex) -> Node:
    # Post-order without recursion: a builder is frozen once all its children are.
    frozen: dict[int, Node] = {}
    pending: list[tuple[CountNode, int, bool]] = [(top, -1, False)]  # -1: the root
    while pending:
        builder, k, expanded = pending.pop()
        if not expanded:
            pending.append((builder, k, True))
            pending.extend((b, kid, False) for kid, b in builder.children.items())
            continue
        kids = [frozen.pop(id(b)) for b in builder.children.values()]
        if len(kids) > 1:
            kids.sort(key=_sort_key)
        key, label = (keys.keys[k], keys.labels[k]) if k >= 0 else (None, name)
        frozen[id(builder)] = Node(label, builder.value, builder.self_value, key, tuple(kids))
    return frozen[id(top)]


def _to_dict(root: Node) -> dict[str, object]:
    # Iterative for the same reason as Node.walk; children lists are filled in place.
    out: dict[str, object] = {}
    pending: list[tuple[Node, dict[str, object]]] = [(root, out)]
    while pending:
        node, target = pending.pop()
        kids: list[dict[str, object]] = []
        target.update(name=node.name, value=node.value, children=kids)
        for c in node.children:
            slot: dict[str, object] = {}
            kids.append(slot)
            pending.append((c, slot))
    return out
