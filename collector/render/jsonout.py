"""JSON text for trees as deep as ingest allows, without recursion.

Shared by every renderer that writes a tree: json.dumps recurses once per nesting level
and a tree node is two levels (object, children list), so the deepest stacks ingest
accepts (512 frames) would overflow Python's recursion limit.
"""

from __future__ import annotations

import json


class _Raw(str):
    """Text that goes out as it is: the punctuation between values."""


def dumps_deep(value: object) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` without recursion.

    json.dumps recurses once per nesting level and a tree node is two levels (object,
    children list), so a stack as deep as ingest allows (512 frames) would overflow
    Python's recursion limit. Only dicts, lists and tuples nest; scalars are json.dumps'.
    """
    try:
        # C speed (10x the walk below) for every document shallow enough for it; the
        # walk is only for trees near ingest's depth limit. The output is the same.
        return _scalar(value)
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
                pending.extend((val, _Raw(("," if i else "") + _scalar(str(key)) + ":")))
            out.append("{")
        elif isinstance(item, list | tuple):
            pending.append(_Raw("]"))
            for i, val in reversed(list(enumerate(item))):
                pending.extend((val, _Raw("," if i else "")))
            out.append("[")
        else:
            out.append(_scalar(item))
    return "".join(out)


def _scalar(value: object) -> str:
    # compact, like the plain tree: diffs of real services run to megabytes
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
