"""Differential profiles: what changed between a baseline window and a target window.

Two windows rarely have the same length or the same traffic, so raw sample counts do
not compare. Each side's counts are divided by that side's own divisor first:

- by default its window's duration in seconds (``Profile.duration_ns``): values are
  samples per second, so a 60 s baseline and a 10 s target of the same workload show
  no change;
- when units are given for both sides (e.g. each window's request count), by those:
  values are samples per unit, e.g. per request, so a traffic surge does not make every
  function look slower, while a function that got costlier per request does.

A side whose divisor is zero (no requests in it) has all values 0.0: there is nothing
to compare per unit. Shares (a node's samples over its side's total) need no divisor
and answer the other question: did the *shape* of the profile change.

Frames are matched by function identity (``tree.FunctionKey``) along their call path,
as ``tree.build_tree`` merges them, so a function present on only one side is a node
with zero on the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Stack
from pyrometer.collector.model import Profile
from pyrometer.collector.query.tree import (
    PATHS,
    FunctionIndex,
    FunctionKey,
    FunctionPaths,
    root_name,
)

Ranking = Literal["share", "value"]


@dataclass(frozen=True, slots=True)
class FunctionStat:
    """Samples of one function in a profile, each sample counted once per function.

    ``total`` counts the samples with the function anywhere on the stack (a recursive
    function is counted once, not once per frame), ``self_samples`` those where it is
    the leaf.
    """

    total: int
    self_samples: int


@dataclass(frozen=True, slots=True)
class Normalisation:
    """What each side's sample counts are divided by: seconds of window, or units."""

    per: Literal["second", "unit"]
    baseline: float  # divisor of the baseline's counts
    target: float  # divisor of the target's counts

    def values(self, baseline_count: int, target_count: int) -> tuple[float, float]:
        """Both counts, normalised."""
        return _per(baseline_count, self.baseline), _per(target_count, self.target)


@dataclass(frozen=True, slots=True)
class DiffNode:
    """One call path in both windows: raw samples, normalised values and shares.

    ``baseline``/``target`` are normalised (see ``Normalisation``), ``*_samples`` raw,
    ``*_share`` the fraction (0..1) of that side's total. Children come by descending
    ``baseline + target``, then name, then file. ``key`` is None only for the root.
    """

    name: str
    key: FunctionKey | None
    baseline_samples: int
    target_samples: int
    baseline: float
    target: float
    baseline_share: float
    target_share: float
    children: tuple[DiffNode, ...] = ()

    @property
    def delta(self) -> float:
        """Change of the normalised value, target minus baseline."""
        return self.target - self.baseline

    @property
    def share_delta(self) -> float:
        """Change of the share of all samples, target minus baseline (0..1 scale)."""
        return self.target_share - self.baseline_share


@dataclass(frozen=True, slots=True)
class FunctionChange:
    """How one function's inclusive samples changed, for reports ("4% -> 31%")."""

    function: str  # the tree's label, "name (file)"
    baseline_share: float  # of the baseline's samples, 0..1
    target_share: float
    baseline: float  # normalised inclusive samples (per second or per unit)
    target: float
    delta: float  # target - baseline
    share_delta: float  # target_share - baseline_share


def function_stats(profile: Profile, functions: StackFunctions | None = None
                   ) -> dict[str, FunctionStat]:
    """Inclusive and self samples per function label (``name (file)``), sorted by label.

    One pass over the stacks' frames, with no tree: where no tree is built anyway (the
    spike analysis asks this of a fleet's half hour), building one only to walk it cost
    twice as much. A function is counted once per sample however often it recurs.
    `functions` may be shared between profiles that share stack objects, so that each
    stack's frames are walked once for all of them."""
    functions = StackFunctions() if functions is None else functions
    rows = [(functions.of(stack), count) for stack, count in profile.samples]
    width = len(functions.labels)
    totals, leaves = [0] * width, [0] * width
    present: set[int] = set()
    for (distinct, leaf), count in rows:
        for no in distinct:
            totals[no] += count
        if leaf >= 0:
            leaves[leaf] += count
        present.update(distinct)
    labels = functions.labels
    return {labels[no]: FunctionStat(totals[no], leaves[no])
            for no in sorted(present, key=labels.__getitem__)}


class StackFunctions:
    """Each stack's functions, by label number, each once, and its leaf's: found once
    per stack object however many profiles hold it.

    The spike analysis asks `function_stats` of a spike, its baseline and its versions,
    all read from one store, which hands them the same stack objects: the second
    profile's stacks are nearly all known. Keeps each stack it has seen alive, since its
    id is the key; meant to live as long as one analysis.
    """

    __slots__ = ("_keys", "_label_no", "_last", "_of_key", "_stacks", "labels")

    def __init__(self) -> None:
        self._keys = FunctionIndex()
        self._label_no: dict[str, int] = {}
        self._of_key: list[int] = []  # a FunctionIndex key's label number
        self._last: list[int] = []  # by label number: the stack (its number) that last had it
        self._stacks: dict[int, tuple[Stack, tuple[tuple[int, ...], int]]] = {}
        self.labels: list[str] = []  # by label number

    def of(self, stack: Stack) -> tuple[tuple[int, ...], int]:
        """(the stack's distinct label numbers, its leaf's; -1 for an empty stack)."""
        found = self._stacks.get(id(stack))
        if found is not None:
            return found[1]
        keys, of_key, last = self._keys, self._of_key, self._last
        seen, key_of = keys.by_frame, keys.of
        n = len(self._stacks)
        distinct: list[int] = []
        no = -1
        for frame in stack:
            k = seen.get(id(frame))
            if k is None:
                k = key_of(frame)
            while len(of_key) <= k:  # a new key: its label's number, maybe a new label
                label = keys.labels[len(of_key)]
                number = self._label_no.get(label)
                if number is None:
                    number = self._label_no[label] = len(self.labels)
                    self.labels.append(label)
                    last.append(-1)
                of_key.append(number)
            no = of_key[k]
            if last[no] != n:
                last[no] = n
                distinct.append(no)
        answer = (tuple(distinct), no)
        self._stacks[id(stack)] = (stack, answer)
        return answer

    def __len__(self) -> int:
        """The stacks it has seen."""
        return len(self._stacks)


class PairNode:
    """A node of the two windows' merged count tree: each side's samples whose stack
    starts with the node's path (``baseline``, ``target``) and ends at it (``*_self``).
    Mutable while samples go in; read by `DiffTree`'s users, never frozen."""

    __slots__ = ("baseline", "baseline_self", "children", "target", "target_self")

    def __init__(self) -> None:
        self.baseline = self.target = self.baseline_self = self.target_self = 0
        # by the index of the child's FunctionKey in FunctionIndex.keys: an int hashes in C
        self.children: dict[int, PairNode] = {}


@dataclass(frozen=True, slots=True)
class DiffTree:
    """Both windows in one count tree, with what its values are divided by: what the
    diff's tree and its function changes are both read from (`pair_tree`)."""

    root: PairNode
    keys: FunctionIndex
    norm: Normalisation
    name: str  # the root's label


def pair_tree(baseline: Profile, target: Profile, norm: Normalisation,
              paths: FunctionPaths = PATHS) -> DiffTree:
    """The two profiles' stacks merged into one tree holding both sides' counts.

    One walk per distinct stack, not one per side: the store hands both windows the
    same stack objects (its stack cache), so a stack in both windows is walked once with
    both counts, where two trees and a merge of them walked it three times. Stacks that
    are equal but not the same object are simply walked once each: the tree is the same.
    """
    both: dict[int, list[Any]] = {}  # id(stack) -> [stack, baseline count, target count]
    for side, profile in ((1, baseline), (2, target)):
        for stack, count in profile.samples:
            entry = both.get(id(stack))
            if entry is None:
                entry = both[id(stack)] = [stack, 0, 0]
            entry[side] += count
    top = PairNode()
    # tree.count_tree's loop with two counts a node, written out again rather than
    # shared through a callback per frame, which would cost this hot loop its speed
    with paths.lock:
        paths.trim()
        known, path_of, keys = paths.paths, paths.of, paths.keys
        for stack, b, t in both.values():
            top.baseline += b
            top.target += t
            node = top
            found = known.get(id(stack))
            for k in found[1] if found is not None else path_of(stack):
                child = node.children.get(k)
                if child is None:
                    child = node.children[k] = PairNode()
                child.baseline += b
                child.target += t
                node = child
            node.baseline_self += b
            node.target_self += t
    name = root_name(target) if target.service else root_name(baseline)
    return DiffTree(top, keys, norm, name)


def _stats(tree: DiffTree) -> tuple[dict[str, FunctionStat], dict[str, FunctionStat]]:
    # From the count tree, not the stacks: a tree node stands for every sample whose
    # stack starts with its path, so a function's inclusive samples are the values of
    # its topmost nodes (none of its ancestors is the same function: recursion counts a
    # sample once), and its self samples the self values of all its nodes. One step per
    # node for both sides, where a pass over the stacks took one per frame of every
    # stack. Functions are told apart by label, as the flame graph shows them.
    label_no: dict[str, int] = {}
    of_key = [label_no.setdefault(label, len(label_no)) for label in tree.keys.labels]
    width = len(label_no)
    b_totals, b_leaves, t_totals, t_leaves = [0] * width, [0] * width, [0] * width, [0] * width
    on_path = [0] * width
    pending: list[tuple[PairNode, int, bool]] = [
        (c, k, False) for k, c in tree.root.children.items()]
    while pending:
        node, k, leaving = pending.pop()
        n = of_key[k]
        if leaving:
            on_path[n] -= 1
            continue
        if not on_path[n]:
            b_totals[n] += node.baseline
            t_totals[n] += node.target
        b_leaves[n] += node.baseline_self
        t_leaves[n] += node.target_self
        on_path[n] += 1
        pending.append((node, k, True))
        pending.extend((c, ck, False) for ck, c in node.children.items())
    # every label in the tree is in both; a side without it has zeros (_changes reads a
    # missing label as zeros too)
    ordered = sorted(label_no.items())
    return ({label: FunctionStat(b_totals[n], b_leaves[n]) for label, n in ordered},
            {label: FunctionStat(t_totals[n], t_leaves[n]) for label, n in ordered})


def normalisation(baseline: Profile, target: Profile, *, baseline_units: float | None = None,
                  target_units: float | None = None) -> Normalisation:
    """Per second of each window, or per unit when both unit counts are given.

    Raises ValueError when only one side's units are given, or a count is negative or
    not finite.
    """
    if baseline_units is None and target_units is None:
        return Normalisation("second", baseline.duration_ns / NANOS_PER_SECOND,
                             target.duration_ns / NANOS_PER_SECOND)
    if baseline_units is None or target_units is None:
        raise ValueError("give units for both windows or for neither")
    for units in (baseline_units, target_units):
        if not math.isfinite(units) or units < 0:
            raise ValueError(f"units must be a finite count >= 0, not {units!r}")
    return Normalisation("unit", float(baseline_units), float(target_units))


def diff_profiles(baseline: Profile, target: Profile, *, baseline_units: float | None = None,
                  target_units: float | None = None) -> DiffNode:
    """The two call trees merged node by node, rooted at the service (see module doc)."""
    norm = normalisation(baseline, target, baseline_units=baseline_units,
                         target_units=target_units)
    return freeze(pair_tree(baseline, target, norm))


def top_changes(baseline: Profile, target: Profile, n: int = 10, *,
                baseline_units: float | None = None, target_units: float | None = None,
                by: Ranking = "share") -> list[FunctionChange]:
    """The ``n`` functions whose inclusive samples changed most, largest change first.

    ``by="share"`` ranks by the change of share of all samples (the profile's shape),
    ``by="value"`` by the change of the normalised value. Functions whose ranked change
    is zero (for values: within 1e-9 relative) are left out; ties go by function label.
    """
    norm = normalisation(baseline, target, baseline_units=baseline_units,
                         target_units=target_units)
    return tree_changes(pair_tree(baseline, target, norm), n, by)


def tree_changes(tree: DiffTree, n: int = 10, by: Ranking = "share") -> list[FunctionChange]:
    """`top_changes` of the two profiles a `pair_tree` holds."""
    return _changes(*_stats(tree), (tree.root.baseline, tree.root.target), tree.norm, n, by)


def _changes(before: dict[str, FunctionStat], after: dict[str, FunctionStat],
             totals: tuple[int, int], norm: Normalisation, n: int, by: Ranking
             ) -> list[FunctionChange]:
    zero = FunctionStat(0, 0)
    changes = []
    b_total, t_total = totals  # each side's samples: its count tree's root
    for label in sorted(before.keys() | after.keys()):
        b, t = before.get(label, zero).total, after.get(label, zero).total
        b_value, t_value = norm.values(b, t)
        b_share, t_share = _share(b, b_total), _share(t, t_total)
        changes.append(FunctionChange(label, b_share, t_share, b_value, t_value,
                                      t_value - b_value, t_share - b_share))
    if by == "share":
        ranked = [c for c in changes if c.share_delta != 0]
        ranked.sort(key=lambda c: (-abs(c.share_delta), c.function))
    else:
        # values are quotients of floats: equal rates can differ in the last digit
        ranked = [c for c in changes if not math.isclose(c.baseline, c.target, rel_tol=1e-9)]
        ranked.sort(key=lambda c: (-abs(c.delta), c.function))
    return ranked[:max(n, 0)]


def caveats(baseline: Profile, target: Profile) -> tuple[str, ...]:
    """Why the two sides' values may not compare, for a banner; empty when they do."""
    if not baseline.samples or not target.samples:
        return ()
    found = []
    if baseline.rate_hz != target.rate_hz:
        # values count samples, and samples per second scale with the sampling rate
        found.append(f"The baseline was sampled at {baseline.rate_hz:g} Hz and the target at "
                     f"{target.rate_hz:g} Hz: compare shares, not values.")
    if baseline.idle_included != target.idle_included:
        found.append("Only one window includes idle (wall-clock) stacks: the two do not "
                     "measure the same thing.")
    return tuple(found)


def _per(count: int, divisor: float) -> float:
    return count / divisor if divisor > 0 else 0.0


def _share(count: int, total: int) -> float:
    return count / total if total > 0 else 0.0


def freeze(tree: DiffTree) -> DiffNode:
    """The pair tree as DiffNodes, children in `_sort_key`'s order.

    Post-order without recursion (stacks may be deeper than Python's limit): list the
    nodes parents first, then build DiffNodes from the end, children first.
    """
    norm, labels, keys = tree.norm, tree.keys.labels, tree.keys.keys
    b_total, t_total = tree.root.baseline, tree.root.target
    order: list[tuple[PairNode, int, int]] = [(tree.root, -1, -1)]  # node, parent, key
    i = 0
    while i < len(order):
        order.extend((c, i, k) for k, c in order[i][0].children.items())
        i += 1
    built: dict[int, list[DiffNode]] = {}
    for index in range(len(order) - 1, -1, -1):
        pair, parent, k = order[index]
        b_n, t_n = pair.baseline, pair.target
        b_value, t_value = norm.values(b_n, t_n)
        kids = built.pop(index, [])
        if len(kids) > 1:
            kids.sort(key=_sort_key)
        label, key = (labels[k], keys[k]) if k >= 0 else (tree.name, None)
        node = DiffNode(label, key, b_n, t_n, b_value, t_value, _share(b_n, b_total),
                        _share(t_n, t_total), tuple(kids))
        if parent < 0:
            return node
        built.setdefault(parent, []).append(node)
    raise AssertionError("the root is always built last")


def _sort_key(node: DiffNode) -> tuple[float, str, str]:
    assert node.key is not None
    return (-(node.baseline + node.target), node.name, node.key.file)
