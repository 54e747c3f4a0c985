"""Real servers for the request-recording tests: a RequestListener, uvicorn, wsgiref.

Each runs in its own thread on 127.0.0.1 with a port the kernel picked, so the test
thread stays synchronous and talks to them over real sockets.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import wsgiref.simple_server
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

import uvicorn

from pyrometer.agent.requests.listener import RequestListener
from pyrometer.agent.shared.model import RequestRecord

DEADLINE_S = 30.0  # generous: a busy 2-core machine; nothing waits this long when all is well


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Records:
    """A RequestListener on its own event loop; what it emits is collected here."""

    def __init__(self) -> None:
        self.listener = RequestListener("127.0.0.1:0")
        self.port = 0
        self._records: list[RequestRecord] = []
        self._changed = threading.Condition()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self) -> None:
        self.port = await self.listener.start(self._add)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            self.listener.close()

    def _add(self, record: RequestRecord) -> None:
        with self._changed:
            self._records.append(record)
            self._changed.notify_all()

    def wait(self, count: int) -> list[RequestRecord]:
        """The records once at least `count` have arrived (fails after DEADLINE_S)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self._records) >= count, DEADLINE_S)
            assert arrived, f"{len(self._records)} request records arrived, expected {count}"
            return list(self._records)

    def __enter__(self) -> Records:
        self._thread.start()
        assert self._ready.wait(DEADLINE_S), "the request listener did not start"
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(DEADLINE_S)


class UvicornThread:
    """uvicorn serving an ASGI app on a socket bound and listening before it starts.

    Connections made before uvicorn is up wait in the listen backlog, so a test can send
    at once: the socket being open is the readiness.
    """

    def __init__(self, app: Any, lifespan: Literal["auto", "on", "off"] = "off") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(app, lifespan=lifespan, log_config=None, log_level="critical",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        daemon=True)

    def __enter__(self) -> UvicornThread:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self._thread.join(DEADLINE_S)
        self.sock.close()


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        pass


class WsgiThread:
    """wsgiref's server (listening from construction) serving in a thread."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        self.port = int(self.server.server_port)
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> WsgiThread:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.shutdown()
        self._thread.join(DEADLINE_S)
        self.server.server_close()


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP request on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
