"""What the demo servers share: the HTTP server, the request recorder, the ready line,
runtime switches read from files, and JSON in and out.

The demo servers (model_server.py, llm_server.py) are run by path, so this module is
imported as a sibling (the script's folder is on sys.path), not from a package.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any, Generic, Protocol, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger("demo-server")
RECHECK_S = 1.0  # how stale a file-driven switch may be
DRAIN_GRACE_S = 5.0
MAX_BODY_BYTES = 1 << 20

StartResponse = Callable[..., Any]
T = TypeVar("T")


class DemoConfigError(Exception):
    """A bad flag or environment value; main() prints it and exits 2."""


def env_bool(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise DemoConfigError(f"{key}={raw!r}: use 1 or 0")


def positive_int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise DemoConfigError(f"{what}={text!r}: expected a whole number") from None
    if value < 1:
        raise DemoConfigError(f"{what}={value}: must be at least 1")
    return value


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise DemoConfigError(f"--port {port}: must be 0..65535")


class PolledFile(Generic[T]):
    """A value parsed from a file, re-read at most once per RECHECK_S.

    Cheap on the hot path: between re-reads it is a clock read and a comparison, so a
    scenario can change a running server's behaviour by writing one file. A missing,
    unreadable or half-written file gives the default.
    """

    def __init__(self, path: str | None, default: T,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._default = default
        self._clock = clock
        self._lock = threading.Lock()
        self._value = default
        self._checked = float("-inf")

    def value(self) -> T:
        if self._path is None:
            return self._default
        now = self._clock()
        with self._lock:
            if now - self._checked >= RECHECK_S:
                self._checked = now
                try:
                    with open(self._path, encoding="utf-8") as f:
                        self._value = self._parse(f.read())
                except (OSError, ValueError):
                    self._value = self._default
            return self._value

    def _parse(self, text: str) -> T:
        raise NotImplementedError


def flag_lines(text: str) -> dict[str, str]:
    """``name=value`` lines of a flags file, ``#`` comments and blank lines skipped;
    ValueError for a line without ``=`` (which keeps the whole file out)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, raw = line.partition("=")
        if not sep:
            raise ValueError(f"bad flag line {line!r}")
        out[name.strip()] = raw.strip().lower()
    return out


class BadRequest(Exception):
    """The client sent something the API cannot take; becomes a 4xx."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def require(method: str, allowed: str) -> None:
    if method != allowed:
        raise BadRequest("405 Method Not Allowed", f"use {allowed}")


def read_json(environ: dict[str, Any], max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request body as a JSON object; BadRequest says what is wrong with it."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("400 Bad Request", "bad Content-Length") from None
    if length > max_bytes:
        raise BadRequest("413 Payload Too Large", f"body over {max_bytes} bytes")
    try:
        body = json.loads(environ["wsgi.input"].read(length) or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("400 Bad Request", "body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("400 Bad Request", "body must be a JSON object")
    return body


def reply(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    start_response(status, headers)
    return [data]


Handler = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def dispatch(environ: dict[str, Any], start_response: StartResponse,
             routes: Mapping[str, tuple[str, Handler]]) -> Iterable[bytes]:
    """Answer a request from `routes` (path: (method, handler)), and GET /healthz: a route
    asked with another method gets 405, an unknown path 404, a BadRequest its 4xx, and
    anything else the handler raises a logged 500."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
    try:
        if path == "/healthz":
            require(method, "GET")
            return reply(start_response, "200 OK", {"status": "ok"})
        if path not in routes:
            raise BadRequest("404 Not Found", f"no route {path}")
        allowed, handler = routes[path]
        require(method, allowed)
        return handler(environ, start_response)
    except BadRequest as exc:
        return reply(start_response, exc.status, {"error": str(exc)})
    except Exception:
        log.exception("%s %s failed", method, path)
        return reply(start_response, "500 Internal Server Error", {"error": "internal"})


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per connection; the app bounds the actual work."""

    daemon_threads = True  # shutdown drains through the app, not by joining threads
    request_queue_size = 256  # open-loop load arrives in bursts; the default 5 drops them


class QuietHandler(WSGIRequestHandler):
    """No access log on stderr: at hundreds of requests a second it is only noise."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class DrainableApp(Protocol):
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any: ...
    def drain(self, timeout: float) -> bool: ...


def with_request_records(app: DrainableApp) -> object:
    """Wrap the app in Pyrometer's WSGI middleware when PYROMETER_REQUESTS_ADDR is set.

    This is how a user's app reports each request's latency and sizes to the agent: a
    two-line change, and the middleware never blocks or raises into the app.
    """
    if not os.environ.get("PYROMETER_REQUESTS_ADDR"):
        return app
    from pyrometer.agent.middleware import PyrometerWSGIMiddleware

    return PyrometerWSGIMiddleware(app)


def serve(name: str, app: DrainableApp, host: str, port: int) -> int:
    """Bind, print ``NAME listening on http://HOST:PORT``, serve until SIGTERM/SIGINT,
    drain what is in flight, return 0."""
    server = make_server(host, port, with_request_records(app),
                         server_class=ThreadingWSGIServer, handler_class=QuietHandler)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # serve_forever runs in a thread so that the main thread stays free for signals
    # and can call shutdown(), which would deadlock if called from serve_forever's thread.
    acceptor = threading.Thread(target=server.serve_forever, name="http-acceptor", daemon=True)
    acceptor.start()
    print(f"{name} listening on http://{host}:{server.server_address[1]}", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    if not app.drain(DRAIN_GRACE_S):
        log.warning("stopping with requests still in flight after %.0fs", DRAIN_GRACE_S)
    server.server_close()
    return 0


def run(name: str, parse: Callable[[], Any], start: Callable[[Any], int]) -> int:
    """A demo server's main(): parse its config (DemoConfigError: exit 2), then serve
    (cannot listen: exit 1). The only place that decides the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = parse()
    except DemoConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    try:
        return start(config)
    except OSError as exc:
        print(f"{name}: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
