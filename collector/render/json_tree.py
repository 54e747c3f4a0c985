"""The merged call tree as JSON, with the window it describes.

The envelope, version 1 (keys in this order, integers exact)::

    {
      "version": 1,
      "service": "api",           # "" when the profile has no service
      "start_ns": 1700000000000000000,
      "end_ns": 1700000060000000000,
      "duration_ns": 60000000000,
      "total": 6000,              # samples in the window; == tree.value
      "rate_hz": 100.0,           # sampling rate asked of the agents
      "period_ns": 10000000,      # one sample stands for this much time; 0 if rate is 0
      "idle_included": false,     # true: wall-clock samples, idle stacks counted
      "unit": "samples",          # what every "value" counts
      "notice": null,             # or a string the viewer must show (e.g. replayed data)
      "tree": {"name": "api", "value": 6000, "children": [...]}
    }

Tree nodes are ``{name, value, children}`` exactly as d3-flame-graph reads them, built
by ``pyrometer.collector.query.tree.build_tree``: ``name`` is ``function (file)``, ``value``
counts samples including callees, and children come by descending value, then name.
A node's self count is ``value`` minus the sum of its children's values.

The ``*_ns`` integers are exact; they exceed 2**53, so a JavaScript reader gets them
rounded to a fraction of a microsecond, which is harmless for a window's bounds.
"""

from __future__ import annotations

from pyrometer.collector.model import Profile
from pyrometer.collector.query.tree import CountNode, by_value, count_tree, root_name
from pyrometer.collector.render.jsonout import (
    EncodedNames,
    JSONText,
    dumps_deep,
    scalar,
    tree_text,
)

ENVELOPE_VERSION = 1


def tree_document(profile: Profile, *, notice: str = "") -> dict[str, object]:
    """The envelope above, ready for `dumps_deep` (the HTML renderer embeds the same).

    Its ``"tree"`` is JSON text already (`tree_json`): a flame graph's tree is most of
    the document, and writing it straight from the counts is about twice as fast as
    building it as dicts to encode them."""
    return {
        "version": ENVELOPE_VERSION,
        "service": profile.service,
        "start_ns": profile.start_ns,
        "end_ns": profile.end_ns,
        "duration_ns": profile.duration_ns,
        "total": profile.total,
        "rate_hz": profile.rate_hz,
        "period_ns": profile.period_ns,
        "idle_included": profile.idle_included,
        "unit": "samples",
        "notice": notice or None,
        "tree": tree_json(profile),
    }


def render_json(profile: Profile, *, notice: str = "") -> str:
    """Render ``profile`` as the JSON envelope described in this module's docstring."""
    # Compact separators: trees of real services run to megabytes. ensure_ascii=False
    # keeps non-ASCII names readable; the HTTP layer sends the text as UTF-8.
    return dumps_deep(tree_document(profile, notice=notice))


def tree_json(profile: Profile) -> JSONText:
    """The JSON text of ``build_tree(profile).to_dict()``, written from the count tree.

    Exactly what `dumps_deep` makes of that dict (a test holds it to that), without a
    frozen Node or a dict per node; each label is encoded once, not once per node."""
    top, keys = count_tree(profile)
    names = EncodedNames(keys.labels)

    def expand(node: CountNode) -> list[tuple[CountNode, str]]:
        # the head written out here, not by a call: this runs once per node
        return [(child, f'{{"name":{names[k]},"value":{child.value},"children":[')
                for k, child in by_value(node, keys)]

    return tree_text(top, f'{{"name":{scalar(root_name(profile))},"value":{top.value},'
                          '"children":[', expand)
