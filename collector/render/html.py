"""A self-contained HTML flame graph: one file, no network, opens from disk.

The page is ``flamegraph.html`` next to this module with its slots filled in: the
``<title>`` (HTML-escaped), a ``<script type="application/json">`` element holding the
JSON envelope of ``json_tree`` plus a ``title`` key, and the stylesheet and script of
the flame graph components in ``pyrometer.collector.ui`` (static/flame.css, flame.js,
export.js), inlined: the collector's page loads the same files, so there is one copy of
the drawing code. The script draws the tree (root on top), zooms on click, resets with
the button or Esc, highlights search matches and reports the share of samples they
cover, shows a tooltip with self and total samples and percentages, and a table of the
top functions by self and total samples. A ``notice`` (e.g. "replayed data") is shown
as a banner.

Why the data cannot break out: inside a script element the HTML parser only looks for
``</script`` (and ``<!--``), and JSON may spell any character as ``\\uXXXX``, so every
``<``, ``>`` and ``&`` in the JSON text is written that way. A frame named
``</script><script>alert(1)</script>`` stays a string in the data, and the page sets
all text with ``textContent``, never as markup.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources

from pyrometer.collector.model import Profile
from pyrometer.collector.render.json_tree import tree_document
from pyrometer.collector.render.jsonout import dumps_deep
from pyrometer.collector.render.speedscope import window_label
from pyrometer.collector.ui.assets import inline_script, inline_style

_SLOT = re.compile(r"\{\{([A-Z]+)\}\}")
_UNSAFE_IN_SCRIPT = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
PAGE = "flamegraph.html"


@cache
def template(name: str) -> str:
    """A page template shipped next to this module (``flamegraph.html``, ...)."""
    return resources.files("pyrometer.collector.render").joinpath(name).read_text("utf-8")


def fill_slots(page: str, slots: Mapping[str, str]) -> str:
    """Replace each ``{{NAME}}`` in ``page`` with ``slots[NAME]``; unknown names stay.

    One pass, so text put into one slot is never taken for another slot.
    """
    return _SLOT.sub(lambda m: slots.get(m.group(1), m.group()), page)


def component_slots() -> dict[str, str]:
    """The ``STYLE`` and ``SCRIPT`` slots of every export: the shared components, inlined."""
    return {"STYLE": inline_style(), "SCRIPT": inline_script()}


def script_safe_json(value: object) -> str:
    """JSON text that can sit inside a ``<script>`` element without ending it."""
    return script_safe(dumps_deep(value))


def script_safe(json_text: str) -> str:
    """``json_text`` with every ``<``, ``>`` and ``&`` spelled as a JSON ``\\uXXXX`` escape."""
    return re.sub("[<>&]", lambda m: _UNSAFE_IN_SCRIPT[m.group()], json_text)


def page_title(profile: Profile) -> str:
    """Service and window, as the page's title and heading show them."""
    suffix = " (wall-clock)" if profile.idle_included else ""
    return f"{window_label(profile)}, {profile.total} samples{suffix}"


def render_html(profile: Profile, *, notice: str = "") -> str:
    """Render ``profile`` as a standalone HTML flame graph; ``notice`` becomes a banner."""
    title = page_title(profile)
    data = {"title": title, **tree_document(profile, notice=notice)}
    return fill_slots(template(PAGE), {"TITLE": html.escape(title), "DATA": script_safe_json(data),
                                       **component_slots()})
