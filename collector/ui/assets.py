"""The files under static/, read from the installed package (pure: no HTTP, no I/O but
reading package data).

One set of components serves two kinds of page: the collector's page loads them as
files (``/ui/flame.js``), and the single-file exports inline them, so that an exported
flame graph draws exactly like the page and opens from disk with no network. The
vendored libraries live in static/vendor/ (see vendor.py and vendor.lock.json there).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

PACKAGE = "pyrometer.collector.ui"
# what an export inlines, in order: the components, then the glue that reads the data
EXPORT_STYLES = ("flame.css",)
EXPORT_SCRIPTS = ("flame.js", "export.js")
# inside a <script> or <style> element the HTML parser ends the element at "</script"
# ("</style") and treats "<!--" specially: inlined text must hold neither
_ENDS_ELEMENT = re.compile(r"</(script|style)|<!--", re.IGNORECASE)


class AssetError(Exception):
    """A static file is missing, or cannot be inlined."""


@cache
def read_text(name: str) -> str:
    """static/``name`` as text (UTF-8); ``name`` is a path below static/, no ``..``."""
    return _resource(name).read_text("utf-8")


def read_bytes(name: str) -> bytes:
    """static/``name`` as bytes (fonts, icons, wasm)."""
    return _resource(name).read_bytes()


def _resource(name: str) -> resources.abc.Traversable:
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") for part in parts):
        raise AssetError(f"not a static file name: {name!r}")
    node = resources.files(PACKAGE).joinpath("static")
    for part in parts:
        node = node.joinpath(part)
    if not node.is_file():
        raise AssetError(f"no static file {name!r}")
    return node


def _inline(names: tuple[str, ...]) -> str:
    texts = [read_text(name) for name in names]
    for name, text in zip(names, texts, strict=True):
        if _ENDS_ELEMENT.search(text):
            raise AssetError(f"{name} holds '</script', '</style' or '<!--' and cannot be inlined")
    return "\n".join(texts)


@cache
def inline_style(names: tuple[str, ...] = EXPORT_STYLES) -> str:
    """One ``<style>`` element holding the named stylesheets."""
    return f"<style>\n{_inline(names)}</style>"


@cache
def inline_script(names: tuple[str, ...] = EXPORT_SCRIPTS) -> str:
    """One ``<script>`` element holding the named scripts, in order."""
    return f"<script>\n{_inline(names)}</script>"
