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
from pyrometer.collector.query.tree import tree_dict
from pyrometer.collector.render.jsonout import dumps_deep

ENVELOPE_VERSION = 1


def tree_document(profile: Profile, *, notice: str = "") -> dict[str, object]:
    """The envelope above as a JSON-ready dict (the HTML renderer embeds the same)."""
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
        "tree": tree_dict(profile),
    }


def render_json(profile: Profile, *, notice: str = "") -> str:
    """Render ``profile`` as the JSON envelope described in this module's docstring."""
    # Compact separators: trees of real services run to megabytes. ensure_ascii=False
    # keeps non-ASCII names readable; the HTTP layer sends the text as UTF-8.
    return dumps_deep(tree_document(profile, notice=notice))
