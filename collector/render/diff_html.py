"""A self-contained HTML differential flame graph: one file, no network, opens from disk.

The page is ``flamegraph_diff.html`` next to this module. It inlines the same flame
graph components as the plain page (``html.component_slots``), and embeds the
envelope of ``diff_json`` plus a ``title`` key the same way ``html.py`` embeds its tree,
escaped with ``html.script_safe`` so no frame name can end the script element.

What the page draws: frames as wide as their normalised target value (or baseline, or
both windows together, chosen on the page), coloured red where they grew and blue where
they shrank, by default by change of share of all samples (so that a frame whose cost
merely doubled with the traffic stays grey), or by change of normalised value; a table
of the largest changes of share; a tooltip with both
values, shares and sample counts; click to zoom, Esc or Reset to go back; search with
the share of each window the matches cover. ``notice`` and the diff's caveats are shown
as a banner.
"""

from __future__ import annotations

import html

from pyrometer.collector.model import Profile
from pyrometer.collector.render.diff_json import diff_document
from pyrometer.collector.render.html import component_slots, fill_slots, script_safe, template
from pyrometer.collector.render.jsonout import dumps_deep

PAGE = "flamegraph_diff.html"


def diff_title(doc: dict[str, object]) -> str:
    """``svc <from> .. <to> vs baseline <from> .. <to>``, from a diff envelope."""
    return (f"{doc['service'] or 'profile'} {doc['from']} .. {doc['to']} "
            f"vs baseline {doc['baseline_from']} .. {doc['baseline_to']}")


def render_diff_html(baseline: Profile, target: Profile, *, baseline_units: float | None = None,
                     target_units: float | None = None, units_name: str = "unit",
                     notice: str = "") -> str:
    """Render the diff of ``target`` against ``baseline`` as a standalone HTML page."""
    doc = diff_document(baseline, target, baseline_units=baseline_units,
                        target_units=target_units, units_name=units_name, notice=notice)
    title = diff_title(doc)
    slots = {"TITLE": html.escape(title), "DATA": script_safe(dumps_deep({"title": title, **doc})),
             **component_slots()}
    return fill_slots(template(PAGE), slots)
