"""The web page at / and its static files at /ui/... (collector/ui/static).

The files are the page's code, never data, so they are served without a token (see
auth.py): a browser loads the page first and asks for a read token only when an API
call answers 401. Every answer carries a Content-Security-Policy that lets the page
reach nothing but this collector (scripts, styles, fonts, fetches: 'self', and blob:
for the profile handed to the vendored speedscope page), so a stray link to another
host fails in the browser instead of leaking a request.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import mimetypes

from aiohttp import web

from pyrometer.collector.ui.assets import AssetError, read_bytes

INDEX = "index.html"
# the page's own files: strict. speedscope's bundle injects its styles at run time and
# fetches the profile from a blob: URL, and compiles its (vendored) WebAssembly module
# for Java Flight Recorder files at start-up, which its own policy allows.
_CSP_PAGE = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
             "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
             "base-uri 'none'; form-action 'none'")
_CSP_SPEEDSCOPE = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
                   "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
                   "font-src 'self' data:; connect-src 'self' blob:; "
                   "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html",
          ".json": "application/json", ".woff2": "font/woff2", ".wasm": "application/wasm",
          ".png": "image/png", ".ico": "image/x-icon", ".md": "text/plain"}


def add_routes(app: web.Application) -> None:
    """GET / (the page) and GET /ui/{path} (its components and vendored libraries)."""
    app.router.add_get("/", index)
    app.router.add_get("/ui/{path:.+}", static)


async def index(request: web.Request) -> web.Response:
    return await _file(request, INDEX)


async def static(request: web.Request) -> web.Response:
    return await _file(request, request.match_info["path"])


@functools.lru_cache(maxsize=256)
def _read(name: str) -> tuple[bytes, str]:
    """The file and its entity tag; cached, since the files change only with the package."""
    body = read_bytes(name)
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def _file(request: web.Request, name: str) -> web.Response:
    try:
        body, etag = await asyncio.to_thread(_read, name)
    except AssetError:
        raise web.HTTPNotFound(text="no such file") from None
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    content_type = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type == "application/json":
        content_type += "; charset=utf-8"
    csp = _CSP_SPEEDSCOPE if name.startswith("vendor/speedscope/") else _CSP_PAGE
    headers = {"Content-Type": content_type, "Content-Security-Policy": csp,
               "X-Content-Type-Options": "nosniff", "ETag": etag,
               # the files change only with the collector's version: a reload revalidates
               # them (a 304 without a body) rather than fetching them again
               "Cache-Control": "no-cache"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers=headers)
