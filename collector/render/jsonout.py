"""JSON text for trees as deep as ingest allows, without recursion.

Shared by every renderer that writes a tree: json.dumps recurses once per nesting level
and a tree node is two levels (object, children list), so the deepest stacks ingest
accepts (512 frames) would overflow Python's recursion limit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

N = TypeVar("N")


class _Raw(str):
    """Text that goes out as it is: the punctuation between values."""


class JSONText(str):
    """A value already written as JSON text: `dumps_deep` puts it in as it is.

    Only as a value of the document's top-level dict (a tree written by `tree_text`
    beside the envelope's other keys): that is where the renderers need it, and the
    C encoder that writes everything else cannot be told to leave a string unquoted.
    """


def dumps_deep(value: object) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` without recursion.

    json.dumps recurses once per nesting level and a tree node is two levels (object,
    children list), so a stack as deep as ingest allows (512 frames) would overflow
    Python's recursion limit. Only dicts, lists and tuples nest; scalars are json.dumps'.
    A `JSONText` value of the top-level dict goes in as it is.
    """
    if isinstance(value, dict) and any(isinstance(v, JSONText) for v in value.values()):
        parts = (f"{scalar(str(k))}:{v if isinstance(v, JSONText) else dumps_deep(v)}"
                 for k, v in value.items())
        return "{" + ",".join(parts) + "}"
    try:
        # C speed (10x the walk below) for every document shallow enough for it; the
        # walk is only for trees near ingest's depth limit. The output is the same.
        return scalar(value)
    except RecursionError:
        pass
    return _walk(value)


def _walk(value: object) -> str:
    out: list[str] = []
    pending: list[object] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, _Raw):
            out.append(item)
        elif isinstance(item, dict):
            pending.append(_Raw("}"))
            for i, (key, val) in reversed(list(enumerate(item.items()))):
                pending.extend((val, _Raw(("," if i else "") + scalar(str(key)) + ":")))
            out.append("{")
        elif isinstance(item, list | tuple):
            pending.append(_Raw("]"))
            for i, val in reversed(list(enumerate(item))):
                pending.extend((val, _Raw("," if i else "")))
            out.append("[")
        else:
            out.append(scalar(item))
    return "".join(out)


def scalar(value: object) -> str:
    """A value that does not nest (a string, number, bool or None) as JSON text."""
    # compact, like the plain tree: diffs of real services run to megabytes
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class EncodedNames(dict[int, str]):
    """``scalar(names[k])`` by index k, each encoded on first use: a tree's labels come
    from an index of every function this process has seen, of which one tree uses a
    few dozen."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = names

    def __missing__(self, k: int) -> str:
        text = self[k] = scalar(self.names[k])
        return text


def tree_text(root: N, root_head: str, expand: Callable[[N], Sequence[tuple[N, str]]]
              ) -> JSONText:
    """A tree of JSON objects, each ending in its ``"children"`` list, written as text.

    A node's head is its text from ``{`` up to and including ``"children":[``;
    `expand(node)` gives its children in order, each with its head. For a flame graph of
    tens of thousands of nodes this is about twice as fast as building a dict per node
    and encoding them: one f-string a node, with labels and numbers that its caller
    encodes once each. Iterative, so it takes trees of any depth.
    """
    out: list[str] = []
    pending: list[tuple[N, str] | str] = [(root, root_head)]  # nodes, and closing text
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node, head = item
        out.append(head)
        kids = expand(node)
        if not kids:
            out.append("]}")
            continue
        pending.append("]}")
        for i in range(len(kids) - 1, 0, -1):
            pending.append(kids[i])
            pending.append(",")
        pending.append(kids[0])
    return JSONText("".join(out))


def float_text(value: float) -> str:
    """``scalar(value)`` for a float, at a fraction of its cost: json.dumps builds an
    encoder per call, and writes a finite float as its ``repr`` (``NaN`` and
    ``Infinity`` otherwise), which is what this does."""
    return float.__repr__(value) if math.isfinite(value) else scalar(value)
