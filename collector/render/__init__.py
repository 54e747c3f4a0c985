"""Flame graph renderers: pure functions from a Profile to the bytes of one format.

Every renderer shares one signature, ``(profile, *, notice="") -> str | bytes``; the
notice (e.g. "replayed data") is carried by the formats that have a place for it and
ignored by the others (folded). ``FORMATS`` maps each format name to its renderer,
HTTP content type and file extension, and ``render`` is what the API and the CLI call.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple, Protocol

from pyrometer.collector.model import Profile
from pyrometer.collector.render.folded import render_folded
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


FORMATS: Mapping[str, Format] = MappingProxyType(
    {
        "json": Format(render_json, "application/json", "json"),
        "folded": Format(render_folded, "text/plain; charset=utf-8", "folded"),
        "speedscope": Format(render_speedscope, "application/json", "speedscope.json"),
        # what Go's net/http/pprof serves; consumers sniff the gzip magic themselves
        "pprof": Format(render_pprof, "application/octet-stream", "pb.gz"),
        "html": Format(render_html, "text/html; charset=utf-8", "html"),
    }
)


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
