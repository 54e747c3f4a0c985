"""The flame graph formats and their renderers: ``FORMATS`` and ``render``.

Every renderer shares one signature, ``(profile, *, notice="") -> str | bytes``; the
notice (e.g. "replayed data") is carried by the formats that have a place for it and
ignored by the others (folded). ``FORMATS`` maps each format name (formats.py) to its
renderer, HTTP content type and file extension, and ``render`` is what the API calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple, Protocol

from pyrometer.collector.model import Profile
from pyrometer.collector.render.folded import render_folded
from pyrometer.collector.render.formats import CONTENT_TYPES, EXTENSIONS, NAMES
from pyrometer.collector.render.html import render_html
from pyrometer.collector.render.json_tree import render_json
from pyrometer.collector.render.pprof import render_pprof
from pyrometer.collector.render.speedscope import render_speedscope


class Renderer(Protocol):
    """The one signature every renderer has."""

    def __call__(self, profile: Profile, *, notice: str = "") -> str | bytes: ...


class Format(NamedTuple):
    """A renderer and how its output is served and saved."""

    render: Renderer
    content_type: str
    extension: str  # without the leading dot


class UnknownFormat(ValueError):
    """A format name that ``FORMATS`` does not know; the message lists the known ones."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown flame graph format {name!r}; use one of: {', '.join(FORMATS)}")
        self.name = name


_RENDERERS: Mapping[str, Renderer] = {
    "json": render_json, "folded": render_folded, "speedscope": render_speedscope,
    "pprof": render_pprof, "html": render_html,
}
FORMATS: Mapping[str, Format] = MappingProxyType(
    {name: Format(_RENDERERS[name], CONTENT_TYPES[name], EXTENSIONS[name]) for name in NAMES})


def render(profile: Profile, fmt: str, *, notice: str = "") -> tuple[bytes, str]:
    """Render ``profile`` in format ``fmt``: (body bytes, content type).

    Text formats are encoded as UTF-8. Raises UnknownFormat for a name not in FORMATS.
    """
    entry = FORMATS.get(fmt)
    if entry is None:
        raise UnknownFormat(fmt)
    body = entry.render(profile, notice=notice)
    return (body.encode("utf-8") if isinstance(body, str) else body), entry.content_type


__all__ = ["FORMATS", "Format", "Renderer", "UnknownFormat", "render"]
