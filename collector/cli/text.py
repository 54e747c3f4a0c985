"""Pure formatting for the CLI's text output: numbers rounded for people, aligned tables,
and the top functions of a flame graph. JSON output never goes through here: it keeps
the API's full precision."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MISSING = "-"  # a value the answer does not have (no streamed request in a step, say)
_BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB")


def ms(value: float | None) -> str:
    """Milliseconds to 0.1: '12.3'."""
    return MISSING if value is None else f"{value:.1f}"


def size(value: float | None) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1: '512 B', '1.5 KiB'."""
    if value is None:
        return MISSING
    if abs(value) < 1024:
        return f"{value:.0f} B"
    for unit in _BINARY_UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _BINARY_UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def number(value: float | None, digits: int = 1) -> str:
    """A count or rate: integers as they are, other numbers to `digits` decimals."""
    if value is None:
        return MISSING
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.{digits}f}"


def plural(count: int, noun: str) -> str:
    """'1 GPU', '2 GPUs', '3 processes'."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun}{'es' if noun.endswith('s') else 's'}"


def share(value: float | None) -> str:
    """A fraction 0..1 as a percentage to 0.1: '42.9%'."""
    return MISSING if value is None else f"{100 * value:.1f}%"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, left: int = 1) -> str:
    """Rows under headers in aligned columns; the last `left` columns are left-aligned
    (names), the others right-aligned (numbers)."""
    body = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in body) for i in range(len(headers))]
    first_left = len(headers) - left
    lines = []
    for row in body:
        cells = [cell.ljust(width) if i >= first_left else cell.rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class FunctionRow:
    """One function of a flame graph: samples in it (self) and under it (total)."""

    name: str
    self_samples: int
    total_samples: int


def top_functions(tree: Mapping[str, Any], limit: int, by: str = "self") -> list[FunctionRow]:
    """The `limit` functions with the most self (or total) samples in a JSON tree.

    A node's self count is its value less its children's. A recursive function's total
    counts each sample once: a node adds to it only where the function is not already
    on the path above it.
    """
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    on_path: dict[str, int] = {}  # how often each function is on the path to the node
    # depth first, each node seen twice: on the way down (count it) and back up (leave
    # the path); the root is the service, not a function
    pending: list[tuple[Mapping[str, Any], bool]] = [
        (child, False) for child in tree.get("children", [])]
    while pending:
        node, leaving = pending.pop()
        name = str(node["name"])
        if leaving:
            on_path[name] -= 1
            continue
        children = node.get("children", [])
        own[name] = own.get(name, 0) + node["value"] - sum(c["value"] for c in children)
        if not on_path.get(name):
            total[name] = total.get(name, 0) + node["value"]
        on_path[name] = on_path.get(name, 0) + 1
        pending.append((node, True))
        pending.extend((child, False) for child in children)
    rows = [FunctionRow(name, own[name], total[name]) for name in own]
    if by == "total":
        rows.sort(key=lambda r: (-r.total_samples, -r.self_samples, r.name))
    else:
        rows.sort(key=lambda r: (-r.self_samples, -r.total_samples, r.name))
    return rows[:limit]


def functions_table(rows: Sequence[FunctionRow], samples: int) -> str:
    """top_functions as the table `pyrometer flamegraph` prints, shares of `samples`."""
    whole = max(samples, 1)
    return table(("self", "self%", "total", "total%", "function"), (
        (str(r.self_samples), share(r.self_samples / whole), str(r.total_samples),
         share(r.total_samples / whole), r.name) for r in rows))
