"""A self-contained HTML flame graph: one file, no network, opens from disk.

The page is ``flamegraph.html`` next to this module (CSS and JavaScript inline) with two
slots filled in: the ``<title>`` (HTML-escaped) and a ``<script type="application/json">``
element holding the JSON envelope of ``json_tree`` plus a ``title`` key. The script
draws the tree (root on top), zooms on click, resets with the button or Esc, highlights
search matches and reports the share of samples they cover, and shows a tooltip with
samples and percentages. A ``notice`` (e.g. "replayed data") is shown as a banner.

Why the data cannot break out: inside a script element the HTML parser only looks for
``</script`` (and ``<!--``), and JSON may spell any character as ``\\uXXXX``, so every
``<``, ``>`` and ``&`` in the JSON text is written that way. A frame named
``</script><script>alert(1)</script>`` stays a string in the data, and the page sets
all text with ``textContent``, never as markup.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from importlib import resources

from pyrometer.collector.profile import Profile
from pyrometer.collector.render.json_tree import tree_document
from pyrometer.collector.render.speedscope import window_label

_SLOT = re.compile(r"\{\{(TITLE|DATA)\}\}")
_UNSAFE_IN_SCRIPT = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


@cache
def _template() -> str:
    return (
        resources.files("pyrometer.collector.render").joinpath("flamegraph.html").read_text("utf-8")
    )


def script_safe_json(value: object) -> str:
    """JSON text that can sit inside a ``<script>`` element without ending it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return re.sub("[<>&]", lambda m: _UNSAFE_IN_SCRIPT[m.group()], text)


def page_title(profile: Profile) -> str:
    """Service and window, as the page's title and heading show them."""
    suffix = " (wall-clock)" if profile.idle_included else ""
    return f"{window_label(profile)}, {profile.total} samples{suffix}"


def render_html(profile: Profile, *, notice: str = "") -> str:
    """Render ``profile`` as a standalone HTML flame graph; ``notice`` becomes a banner."""
    title = page_title(profile)
    data = {"title": title, **tree_document(profile, notice=notice)}
    slots = {"TITLE": html.escape(title), "DATA": script_safe_json(data)}
    # One pass, so text put into one slot is never taken for another slot.
    return _SLOT.sub(lambda m: slots[m.group(1)], _template())
