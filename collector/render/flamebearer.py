"""A merged call tree in Pyroscope's "flamebearer" layout, which Grafana's flame graph draws.

The tree is laid out level by level: level 0 holds the root (named "total"), level d the
nodes at depth d, left to right. Each node is four numbers: its x offset from the end of
the node before it on the same level (0 for a first child placed at its parent's start),
its total, its self value, and the index of its name in `names`. Values are scaled by
`scale` (samples to nanoseconds, or 1). At most `max_nodes` nodes are kept: the smallest
are folded into an "other" child of their parent, so totals still add up. Pure.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from pyrometer.collector.query.tree import Node

ROOT_NAME = "total"
OTHER_NAME = "other"


@dataclass(frozen=True, slots=True)
class Flamebearer:
    names: tuple[str, ...]
    levels: tuple[tuple[int, ...], ...]
    total: int
    max_self: int


def flamebearer(root: Node, *, scale: int = 1, max_nodes: int = 0) -> Flamebearer:
    """`root`'s tree laid out for Grafana; `max_nodes` 0 keeps every node."""
    keep_from = _threshold(root, max_nodes)
    names: list[str] = []
    name_index: dict[str, int] = {}
    levels: list[list[int]] = []
    level_end: list[int] = []  # absolute x where the last node of each level ends
    max_self = 0
    # depth first, children left to right: (node name, total, self, children, depth, x)
    pending: list[tuple[str, int, int, tuple[Node, ...], int, int]] = [
        (ROOT_NAME, root.value, root.self_value, root.children, 0, 0)]
    while pending:
        name, total, self_value, children, depth, x = pending.pop()
        if depth == len(levels):
            levels.append([])
            level_end.append(0)
        if name not in name_index:
            name_index[name] = len(names)
            names.append(name)
        levels[depth] += [(x - level_end[depth]) * scale, total * scale, self_value * scale,
                          name_index[name]]
        level_end[depth] = x + total
        max_self = max(max_self, self_value * scale)
        kept = [c for c in children if c.value >= keep_from]
        folded = sum(c.value for c in children) - sum(c.value for c in kept)
        placed: list[tuple[str, int, int, tuple[Node, ...], int, int]] = []
        offset = x
        for child in kept:
            placed.append((child.name, child.value, child.self_value, child.children, depth + 1, offset))
            offset += child.value
        if folded:
            placed.append((OTHER_NAME, folded, folded, (), depth + 1, offset))
        pending.extend(reversed(placed))
    return Flamebearer(tuple(names), tuple(tuple(level) for level in levels), root.value * scale,
                       max_self)


def _threshold(root: Node, max_nodes: int) -> int:
    """The smallest total a node may have and be kept, so that about max_nodes remain."""
    if max_nodes <= 0:
        return 0
    totals = [node.value for _, node in root.walk()]
    if len(totals) <= max_nodes:
        return 0
    return heapq.nlargest(max_nodes, totals)[-1]
