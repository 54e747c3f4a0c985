"""ASGI and WSGI middleware that report every request to the Pyrometer agent.

Standard library only, so it is safe to import in any app:

    from pyrometer.agent.middleware import PyrometerASGIMiddleware, record_size
    app = PyrometerASGIMiddleware(app)                  # FastAPI, Starlette, bare ASGI
    wsgi_app = PyrometerWSGIMiddleware(wsgi_app)        # Flask, Django (WSGI)

Per request it sends one UDP datagram (schema in request_probe) to the agent's
--requests-listen address: `address=` if given, else $PYROMETER_REQUESTS_ADDR, else
127.0.0.1:7072. Sending never blocks and never raises; with the agent down the datagrams
are lost and the app is unaffected. A W3C `traceparent` header's trace id goes with the
request, so a slow request found in a spike links to its trace. `route=` is a callable
given the ASGI scope or the WSGI environ after the app has run (so router-filled keys
are there); by default the path with id-like segments templated (/users/123 ->
/users/{id}). Put the middleware outermost so that it times the whole app and counts
the bytes that leave it.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

from pyrometer.agent.requests.probe import (
    DatagramSender,
    RequestProbe,
    record_size,
    resolve_address,
    template_path,
    trace_id_of,
)

__all__ = ["PyrometerASGIMiddleware", "PyrometerWSGIMiddleware", "record_size", "template_path"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Any in the wrapped apps' signatures: apps type scope and environ every which way
# (dict, MutableMapping, TypedDicts), and the middleware passes them on untouched.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Any, Any], Iterable[bytes]]
RouteFn = Callable[[Any], str]


class _Reporter:
    """What both middlewares share: the sender, the route function, the pid."""

    def __init__(self, address: str | None, route: RouteFn | None, path: RouteFn) -> None:
        self.sender = DatagramSender(resolve_address(address))
        self._route = route
        self._path = path
        self._pid = os.getpid()

    def report(self, probe: RequestProbe, request: Any) -> None:
        """Send the probe's datagram; whatever goes wrong stays here."""
        try:
            if os.getpid() != self._pid:  # a pre-fork server forked us after construction
                self._pid = os.getpid()
                self.sender.close()
            self.sender.send(probe.datagram(self._route_of(request), self._pid))
        except Exception as exc:
            self.sender.failed(exc)

    def _route_of(self, request: Any) -> str:
        if self._route is not None:
            try:
                return str(self._route(request))
            except Exception:  # a broken route function must not lose the request
                pass
        return template_path(self._path(request))


class PyrometerASGIMiddleware:
    """Wraps an ASGI app; lifespan and websocket scopes pass through untouched."""

    def __init__(self, app: ASGIApp, *, address: str | None = None, route: RouteFn | None = None) -> None:
        self.app = app
        self._reporter = _Reporter(address, route, lambda scope: str(scope.get("path", "")))
        self.sender = self._reporter.sender

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        probe = RequestProbe(str(scope.get("method", "")))
        probe.trace_id = trace_id_of(_asgi_header(scope, b"traceparent"))
        token = probe.bind()
        body_seen = False

        async def counting_receive() -> Message:
            nonlocal body_seen
            message = await receive()
            if message.get("type") == "http.request":
                body_seen = True
                probe.request_bytes += len(message.get("body", b""))
            return message

        async def timing_send(message: Message) -> None:
            kind = message.get("type")
            if kind == "http.response.start":
                status = message.get("status")
                probe.status = status if type(status) is int else 0  # a bad one is the server's to refuse
            elif kind == "http.response.body":
                body = message.get("body")
                probe.body_chunk(len(body) if isinstance(body, bytes | bytearray | memoryview) else 0)
            await send(message)
            if kind == "http.response.pathsend" or (
                    kind == "http.response.body" and not message.get("more_body", False)):
                probe.finish()

        try:
            await self.app(scope, counting_receive, timing_send)
        except BaseException:
            if probe.end_ns is None:  # the client did not get a whole response
                probe.status = 500
            raise
        finally:
            _current_reset(token)
            if probe.status == 0:  # returned without a response: the server sends a 500
                probe.status = 500
            if not body_seen:
                probe.request_bytes = _asgi_content_length(scope)
            self._reporter.report(probe, scope)


def _current_reset(token: Any) -> None:
    try:
        token.var.reset(token)
    except ValueError:  # a different context (a server that hops contexts): harmless
        pass


def _asgi_header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _asgi_content_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            return _int(value)
    return 0


def _int(value: bytes | str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


class PyrometerWSGIMiddleware:
    """Wraps a WSGI app; the request is recorded when the server closes the response.

    The response iterable is wrapped to time its chunks, so a wsgi.file_wrapper response
    is sent by iterating it rather than with sendfile.
    """

    def __init__(self, app: WSGIApp, *, address: str | None = None, route: RouteFn | None = None) -> None:
        self.app = app
        self._reporter = _Reporter(address, route, _wsgi_path)
        self.sender = self._reporter.sender

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        probe = RequestProbe(str(environ.get("REQUEST_METHOD", "")))
        probe.trace_id = trace_id_of(environ.get("HTTP_TRACEPARENT"))
        probe.bind()  # not reset: the response iterable runs after we return; close() ends it
        if environ.get("CONTENT_LENGTH"):
            probe.request_bytes = _int(environ["CONTENT_LENGTH"])
        elif "wsgi.input" in environ:  # chunked upload: no length, count what is read
            environ["wsgi.input"] = _CountingInput(environ["wsgi.input"], probe)

        def timing_start_response(status: str, headers: list[tuple[str, str]],
                                  exc_info: Any = None) -> Callable[[bytes], object]:
            probe.status = _int(status[:3])
            write = start_response(status, headers, exc_info)

            def timing_write(data: bytes) -> object:
                probe.body_chunk(len(data))
                return write(data)
            return timing_write

        try:
            result = self.app(environ, timing_start_response)
        except BaseException:
            probe.status = 500
            self._reporter.report(probe, environ)
            raise
        return _TimedResponse(result, probe, self._reporter, environ)


def _wsgi_path(environ: dict[str, Any]) -> str:
    return str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))


class _TimedResponse:
    """The app's response iterable, timing each chunk and recording at close()."""

    def __init__(self, result: Iterable[bytes], probe: RequestProbe, reporter: _Reporter,
                 environ: dict[str, Any]) -> None:
        self._result = result
        self._probe = probe
        self._reporter = reporter
        self._environ = environ
        self._recorded = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._result:
                self._probe.body_chunk(len(chunk))
                yield chunk
        except GeneratorExit:  # the server stopped early (client gone): not the app's fault
            raise
        except BaseException:
            self._probe.status = 500
            raise

    def __len__(self) -> int:
        # servers set Content-Length for a one-chunk list response; keep them doing so
        return len(self._result)  # type: ignore[arg-type]  # TypeError when unsized, as unwrapped

    def close(self) -> None:
        self._probe.finish()
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            if not self._recorded:
                self._recorded = True
                self._reporter.report(self._probe, self._environ)


class _CountingInput:
    """wsgi.input that counts the bytes the app reads (for bodies without a length)."""

    def __init__(self, stream: Any, probe: RequestProbe) -> None:
        self._stream = stream
        self._probe = probe

    def _count(self, data: bytes) -> bytes:
        self._probe.request_bytes += len(data)
        return data

    def read(self, *args: Any) -> bytes:
        return self._count(self._stream.read(*args))

    def readline(self, *args: Any) -> bytes:
        return self._count(self._stream.readline(*args))

    def readlines(self, *args: Any) -> list[bytes]:
        return [self._count(line) for line in self._stream.readlines(*args)]

    def __iter__(self) -> Iterator[bytes]:
        return (self._count(line) for line in self._stream)
