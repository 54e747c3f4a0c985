"""A differential flame graph as JSON: two windows' trees merged, normalised, compared.

The envelope, version 1 (keys in this order)::

    {
      "version": 1,
      "service": "api",
      "from": "2025-06-15T15:10:00.000Z",  "to": "...",         # the target window
      "baseline_from": "...",              "baseline_to": "...",
      "from_ns": 1750000200000000000, "to_ns": ..., "baseline_from_ns": ..., "baseline_to_ns": ...,
      "normalisation": {"per": "second", "baseline": 60.0, "target": 10.0},
      "baseline_total": 6000,             # raw samples on each side
      "target_total": 1000,
      "idle_included": false,             # true if either side has wall-clock samples
      "unit": "samples",
      "notice": null,                     # or a string the viewer must show
      "caveats": [],                      # why the sides may not compare (diff.caveats)
      "tree": {"name": "api", "baseline": 100.0, "target": 100.0,
               "baseline_share": 1.0, "target_share": 1.0, "delta": 0.0,
               "baseline_samples": 6000, "target_samples": 1000, "children": [...]},
      "top_changes": [{"function": "render (app/io.py)", "baseline_share": 0.04,
                       "target_share": 0.31, "baseline": 4.0, "target": 31.0,
                       "delta": 27.0, "share_delta": 0.27}, ...]
    }

``normalisation.per`` is ``"second"`` (each side divided by its window's seconds, the
numbers given) or ``"unit"`` (divided by the unit counts the caller gave), or the name
the caller gave those units (the API's ``per=request`` says ``"request"``).
``baseline``/``target``/``delta`` of a node are normalised samples, shares are
fractions 0..1 of that side's total; both are rounded to 6 significant digits,
while ``*_samples`` stay exact. Children come by descending ``baseline + target``.
``top_changes`` ranks functions (inclusive, each sample once) by ``|share_delta|``.
"""

from __future__ import annotations

from pyrometer.collector.model import Profile
from pyrometer.collector.query.diff import (
    DiffNode,
    DiffTree,
    Normalisation,
    PairNode,
    caveats,
    normalisation,
    pair_tree,
    tree_changes,
)
from pyrometer.collector.render.jsonout import (
    EncodedNames,
    JSONText,
    dumps_deep,
    float_text,
    scalar,
    tree_text,
)
from pyrometer.collector.timeparse import format_time

ENVELOPE_VERSION = 1
TOP_CHANGES = 20


def diff_document(baseline: Profile, target: Profile, *, baseline_units: float | None = None,
                  target_units: float | None = None, units_name: str = "unit", notice: str = "",
                  top: int = TOP_CHANGES) -> dict[str, object]:
    """The envelope above as a JSON-ready dict (the HTML renderer embeds the same);
    `units_name` names what the units count (``"request"``), when they are given."""
    norm = normalisation(baseline, target, baseline_units=baseline_units,
                         target_units=target_units)
    tree = pair_tree(baseline, target, norm)
    changes = tree_changes(tree, top)
    return {
        "version": ENVELOPE_VERSION,
        "service": target.service or baseline.service,
        "from": format_time(target.start_ns),
        "to": format_time(target.end_ns),
        "baseline_from": format_time(baseline.start_ns),
        "baseline_to": format_time(baseline.end_ns),
        "from_ns": target.start_ns,
        "to_ns": target.end_ns,
        "baseline_from_ns": baseline.start_ns,
        "baseline_to_ns": baseline.end_ns,
        "normalisation": _normalisation_json(norm, units_name),
        "baseline_total": baseline.total,
        "target_total": target.total,
        "idle_included": baseline.idle_included or target.idle_included,
        "unit": "samples",
        "notice": notice or None,
        "caveats": list(caveats(baseline, target)),
        "tree": pair_tree_text(tree),
        "top_changes": [
            {"function": c.function, "baseline_share": _num(c.baseline_share),
             "target_share": _num(c.target_share), "baseline": _num(c.baseline),
             "target": _num(c.target), "delta": _delta(c.baseline, c.target),
             "share_delta": _num(c.share_delta)}
            for c in changes
        ],
    }


def render_diff_json(baseline: Profile, target: Profile, *, baseline_units: float | None = None,
                     target_units: float | None = None, units_name: str = "unit",
                     notice: str = "") -> str:
    """Render the diff of ``target`` against ``baseline`` as the envelope above."""
    return dumps_deep(diff_document(baseline, target, baseline_units=baseline_units,
                                    target_units=target_units, units_name=units_name,
                                    notice=notice))


def tree_json(root: DiffNode) -> dict[str, object]:
    """A DiffNode as nested dicts; iterative, since stacks can be deeper than recursion.

    The endpoint sends `pair_tree_text` instead; this is the rendering of `diff_profiles`'
    DiffNodes that the tests hold it to."""
    out: dict[str, object] = {}
    pending: list[tuple[DiffNode, dict[str, object]]] = [(root, out)]
    while pending:
        node, slot = pending.pop()
        kids: list[dict[str, object]] = []
        slot.update(
            name=node.name, baseline=_num(node.baseline), target=_num(node.target),
            baseline_share=_num(node.baseline_share), target_share=_num(node.target_share),
            delta=_delta(node.baseline, node.target), baseline_samples=node.baseline_samples,
            target_samples=node.target_samples, children=kids,
        )
        for child in node.children:
            kids.append({})
            pending.append((child, kids[-1]))
    return out


def pair_tree_text(tree: DiffTree) -> JSONText:
    """The JSON text of ``tree_json(freeze(tree))``, written straight from the pair tree.

    What the diff endpoint sends: it skips the DiffNodes and the dicts (one of each per
    node of a tree of tens of thousands), and writes each distinct pair of counts' numbers
    once (a large tree's nodes hold a few thousand distinct pairs; formatting and
    encoding a float is most of what a node cost). Two fleet hours of the bench's day,
    in-process: pair_tree_json and its encoding took about 105 ms (43 and 62), this
    about 45.
    A hypothesis test keeps it equal to the DiffNodes' rendering, encoded.
    """
    norm, labels = tree.norm, tree.keys.labels
    files = tree.keys.files
    names = EncodedNames(labels)
    b_total, t_total = tree.root.baseline, tree.root.target
    per_b, per_t = _Rounded(norm.baseline), _Rounded(norm.target)
    share_b, share_t = _Rounded(b_total), _Rounded(t_total)
    numbers: dict[tuple[int, int], str] = {}

    def head(name: str, node: PairNode) -> str:
        b, t = node.baseline, node.target
        text = numbers.get((b, t))
        if text is None:
            (b_value, b_text), (t_value, t_text) = per_b.of(b), per_t.of(t)
            text = numbers[b, t] = (
                f'"baseline":{b_text},"target":{t_text},"baseline_share":{share_b.of(b)[1]},'
                f'"target_share":{share_t.of(t)[1]},"delta":{float_text(_num(t_value - b_value))},'
                f'"baseline_samples":{b},"target_samples":{t},"children":[')
        return f'{{"name":{name},{text}'

    def order(item: tuple[int, PairNode]) -> tuple[float, str, str]:
        # diff._sort_key's order: descending normalised baseline + target, label, file
        k, node = item
        b_value, t_value = norm.values(node.baseline, node.target)
        return -(b_value + t_value), labels[k], files[k]

    def expand(node: PairNode) -> list[tuple[PairNode, str]]:
        # one child (most nodes of a deep tree) needs no sort
        children = node.children.items()
        ordered = sorted(children, key=order) if len(children) > 1 else children
        return [(child, head(names[k], child)) for k, child in ordered]

    return tree_text(tree.root, head(scalar(tree.name), tree.root), expand)


class _Rounded:
    """``_num(count / divisor)`` (0.0 for a divisor <= 0) and its JSON text, each distinct
    count once."""

    __slots__ = ("divisor", "done")

    def __init__(self, divisor: float) -> None:
        self.divisor = divisor
        self.done: dict[int, tuple[float, str]] = {}

    def of(self, count: int) -> tuple[float, str]:
        found = self.done.get(count)
        if found is None:
            value = _num(count / self.divisor if self.divisor > 0 else 0.0)
            found = self.done[count] = (value, float_text(value))
        return found


def _normalisation_json(norm: Normalisation, units_name: str) -> dict[str, object]:
    per = units_name if norm.per == "unit" else norm.per
    return {"per": per, "baseline": _num(norm.baseline), "target": _num(norm.target)}


def _delta(baseline: float, target: float) -> float:
    # from the rounded values, so that two rates equal to six digits show no change
    return _num(_num(target) - _num(baseline))


def _num(value: float) -> float:
    # six significant digits: enough to read and compare, and keeps floating-point
    # noise (0.30000000000000004) out of the output and the golden files
    return float(f"{value:.6g}")
