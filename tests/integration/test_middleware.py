"""The ASGI and WSGI middleware in real servers, reporting to a real RequestListener."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest

from pyrometer.agent.middleware import PyrometerASGIMiddleware, PyrometerWSGIMiddleware, record_size
from pyrometer.agent.requests.probe import MAX_GAPS, template_path
from pyrometer.agent.shared.model import RequestRecord
from support.request_servers import DEADLINE_S, Records, UvicornThread, WsgiThread, free_port, request

pytestmark = pytest.mark.integration

DELAYS_S = (0.03, 0.05, 0.05)  # before each streamed chunk: ttfb 30 ms, gaps 50 ms
TOLERANCE_US = 10_000


class Boom(Exception):
    """The app's own failure, which must reach the server unchanged."""


def gaps_us(times_ns: list[int]) -> list[int]:
    return [(b - a) // 1000 for a, b in zip(times_ns, times_ns[1:], strict=False)]


class AsgiApp:
    """A bare ASGI app; /stream notes when it sends each chunk, by its own clock."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stream_times: list[int] = []
        self.raised: list[BaseException] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path, start = scope["path"], time.perf_counter_ns()
        if path == "/boom":
            self.raised.append(Boom("app failure"))
            raise self.raised[-1]
        if path.startswith("/users/"):
            record_size(int(path.rsplit("/", 1)[1]))
            await _respond(send, 200, b'{"user": "x"}')
        elif path == "/echo":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            await _respond(send, 200, body)
        elif path == "/threaded":  # record_size from a worker thread of this request
            await asyncio.to_thread(record_size, 7)
            await _respond(send, 200, b"ok")
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            self.stream_times = [start]
            for i, delay in enumerate(DELAYS_S):
                await asyncio.sleep(delay)
                self.stream_times.append(time.perf_counter_ns())
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await _respond(send, 404, b"not found")

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.started.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class WsgiApp:
    """A bare WSGI app with the same routes, plus /write (the legacy write callable)."""

    def __init__(self) -> None:
        self.stream_times: list[int] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path, start = environ["PATH_INFO"], time.perf_counter_ns()
        if path == "/boom":
            raise Boom("app failure")
        if path.startswith("/users/"):
            record_size(int(path.rsplit("/", 1)[1]))
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"user": "x"}']
        if path == "/echo":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        if path == "/write":
            start_response("201 Created", [])(b"written ")
            return [b"and returned"]
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/event-stream")])
            return self._stream(start)
        start_response("404 Not Found", [])
        return [b"not found"]

    def _stream(self, start: int) -> Iterator[bytes]:
        self.stream_times = [start]
        for i, delay in enumerate(DELAYS_S):
            time.sleep(delay)  # the app's own pace, which the record must reproduce
            self.stream_times.append(time.perf_counter_ns())
            yield b"data: %d\n\n" % i
        record_size(len(DELAYS_S))  # a streaming app knows its size only at the end


def ignore_response(status: str, headers: list[tuple[str, str]],
                    exc_info: Any = None) -> Callable[[bytes], None]:
    """start_response for calling a WSGI app directly."""
    return lambda data: None


def test_default_route_templates_ids_and_keeps_the_rest() -> None:
    assert template_path("/users/123") == "/users/{id}"
    assert template_path("/v1/models/9f1c2d3e-1111-4222-8333-00000000abcd/infer") == "/v1/models/{id}/infer"
    assert template_path("/blobs/sha256deadbeef0123456789") == "/blobs/{id}"
    assert template_path("/v1/chat/completions") == "/v1/chat/completions"
    # random-looking tokens are ids; names made of words keep their segment, digits or not
    assert template_path("/customers/cus_9s6XKzkNRiz8i3") == "/customers/{id}"
    assert template_path("/x/01ARZ3NDEKTSV4RRFFQ69G5FAV/y") == "/x/{id}/y"
    assert template_path("/v2/models/bert-base-uncased-v2/infer") == "/v2/models/bert-base-uncased-v2/infer"
    assert template_path("/embed/all-MiniLM-L6-v2") == "/embed/all-MiniLM-L6-v2"
    assert template_path("/inference.v1.GRPCInferenceService/ModelInfer") == \
        "/inference.v1.GRPCInferenceService/ModelInfer"
    assert template_path("/users/abcdefghijklmnopq") == "/users/abcdefghijklmnopq"  # no digit
    assert template_path("") == "/"
    assert len(template_path("/x" * 500)) == 200


def assert_stream_timing(record: RequestRecord, app_times: list[int]) -> None:
    expected_gaps = gaps_us(app_times[1:])
    assert len(record.chunk_gaps_us) == len(expected_gaps) == len(DELAYS_S) - 1
    for got, want in zip(record.chunk_gaps_us, expected_gaps, strict=True):
        assert abs(got - want) <= TOLERANCE_US, (record.chunk_gaps_us, expected_gaps)
    assert record.ttfb_ns is not None
    assert abs(record.ttfb_ns - (app_times[1] - app_times[0])) <= TOLERANCE_US * 1000
    assert record.latency_ns >= record.ttfb_ns + sum(record.chunk_gaps_us) * 1000


TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def test_asgi_in_uvicorn_records_every_request_with_its_fields() -> None:
    app = AsgiApp()
    with Records() as records:
        wrapped = PyrometerASGIMiddleware(app, address=records.address)
        with UvicornThread(wrapped, lifespan="on") as server:
            assert app.started.wait(DEADLINE_S), "lifespan did not reach the app"
            sent = [request(server.port, "GET", f"/users/{i}") for i in range(20)]
            sent += [request(server.port, "POST", "/echo", b"x" * (100 * i),
                             {"traceparent": TRACEPARENT} if i == 1 else {"traceparent": "junk"})
                     for i in range(1, 6)]
            sent += [request(server.port, "GET", "/missing"), request(server.port, "GET", "/boom"),
                     request(server.port, "GET", "/threaded"), request(server.port, "GET", "/stream")]
            got = records.wait(len(sent))
            # a last request, then exactly one more record: nothing was sent twice
            sent.append(request(server.port, "GET", "/users/99"))
            got = records.wait(len(sent))
    assert len(got) == len(sent) == 30
    assert [r.status for r in got] == [status for status, _ in sent]
    by_route = {r.route: r for r in got}
    users = [r for r in got if r.route == "/users/{id}"]
    assert len(users) == 21 and [r.app_size for r in users[:20]] == list(range(20))
    assert all(r.response_bytes == 13 and r.method == "GET" and r.source == "middleware" for r in users)
    echoes = [r for r in got if r.route == "/echo"]
    assert [(r.request_bytes, r.response_bytes) for r in echoes] == [(100 * i, 100 * i) for i in range(1, 6)]
    # a W3C traceparent's trace id goes with the request; a malformed one is ignored
    assert [r.trace_id for r in echoes] == [TRACE_ID, None, None, None, None]
    assert by_route["/boom"].status == 500 and by_route["/missing"].status == 404
    assert by_route["/threaded"].app_size == 7
    assert all(r.pid > 0 and r.end_ns > 0 and r.latency_ns > 0 for r in got)
    assert_stream_timing(by_route["/stream"], app.stream_times)
    assert by_route["/stream"].response_bytes == sum(len(b"data: %d\n\n" % i) for i in range(3))
    assert wrapped.sender.errors == 0 and wrapped.sender.sent == 30


def test_wsgi_in_wsgiref_records_every_request_with_its_fields() -> None:
    app = WsgiApp()
    with Records() as records:
        wrapped = PyrometerWSGIMiddleware(app, address=records.address)
        with WsgiThread(wrapped) as server:
            sent = [request(server.port, "GET", f"/users/{i}") for i in range(20)]
            sent += [request(server.port, "POST", "/echo", b"y" * (100 * i)) for i in range(1, 6)]
            sent += [request(server.port, "GET", "/missing"), request(server.port, "GET", "/boom"),
                     request(server.port, "PUT", "/write"), request(server.port, "GET", "/stream")]
            records.wait(len(sent))
            sent.append(request(server.port, "GET", "/users/99"))
            got = records.wait(len(sent))
    assert len(got) == len(sent) == 30
    assert [r.status for r in got] == [status for status, _ in sent]
    by_route = {r.route: r for r in got}
    assert [r.app_size for r in got if r.route == "/users/{id}"] == [*range(20), 99]
    echoes = [r for r in got if r.route == "/echo"]
    assert [(r.request_bytes, r.response_bytes) for r in echoes] == [(100 * i, 100 * i) for i in range(1, 6)]
    assert by_route["/boom"].status == 500 and by_route["/write"].response_bytes == 20
    assert_stream_timing(by_route["/stream"], app.stream_times)
    assert by_route["/stream"].app_size == 3  # set from inside the response generator


def test_with_the_agent_down_requests_are_served_and_nothing_raises() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    unsendable = "255.255.255.255:7072"  # broadcast without SO_BROADCAST: every send fails
    for address, errors in ((nobody, 0), (unsendable, 3)):
        asgi = PyrometerASGIMiddleware(AsgiApp(), address=address)
        wsgi = PyrometerWSGIMiddleware(WsgiApp(), address=address)
        with UvicornThread(asgi) as a, WsgiThread(wsgi) as w:
            for port in (a.port, w.port):
                assert [request(port, "GET", "/users/1")[0] for _ in range(3)] == [200] * 3
        assert asgi.sender.errors == wsgi.sender.errors == errors


def test_app_exceptions_propagate_unchanged() -> None:
    app = AsgiApp()
    wrapped = PyrometerASGIMiddleware(app, address=f"127.0.0.1:{free_port()}")

    async def call() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: MutableMapping[str, Any]) -> None:
            pass
        await wrapped({"type": "http", "method": "GET", "path": "/boom", "headers": []}, receive, send)

    with pytest.raises(Boom) as caught:
        asyncio.run(call())
    assert caught.value is app.raised[-1]
    wsgi = PyrometerWSGIMiddleware(WsgiApp(), address=f"127.0.0.1:{free_port()}")
    with pytest.raises(Boom, match="app failure"):
        wsgi({"PATH_INFO": "/boom", "REQUEST_METHOD": "GET"}, ignore_response)


def test_wsgi_counts_a_body_without_length_and_caps_gaps_with_a_count() -> None:
    with Records() as records:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            environ["wsgi.input"].read()
            start_response("200 OK", [])
            return [b"c"] * (MAX_GAPS + 100)
        wrapped = PyrometerWSGIMiddleware(app, address=records.address, route=lambda env: "custom")
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/u/1", "wsgi.input": io.BytesIO(b"z" * 777)}
        response = wrapped(environ, ignore_response)
        assert len(response) == MAX_GAPS + 100  # type: ignore[arg-type]
        assert b"".join(response) == b"c" * (MAX_GAPS + 100)
        response.close()  # type: ignore[attr-defined]
        [record] = records.wait(1)
    assert record.route == "custom" and record.request_bytes == 777
    assert len(record.chunk_gaps_us) == MAX_GAPS and record.chunk_gaps_dropped == 99


def test_record_size_outside_a_request_is_a_no_op() -> None:
    assert record_size(5) is False


def test_importing_the_middleware_loads_only_the_standard_library() -> None:
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "import pyrometer.agent.middleware\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=DEADLINE_S).stdout
    loaded = json.loads(out)
    ours = {m for m in loaded if m.split(".")[0] == "pyrometer"}
    assert ours <= {"pyrometer", "pyrometer.agent", "pyrometer.agent.middleware",
                    "pyrometer.agent.requests", "pyrometer.agent.requests.probe"}, ours
    foreign = {m for m in loaded if m.split(".")[0] not in sys.stdlib_module_names | {"pyrometer"}}
    assert not foreign, foreign


def test_non_http_scopes_pass_through_untouched() -> None:
    seen: list[tuple[object, object, object]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    wrapped = PyrometerASGIMiddleware(app, address=f"127.0.0.1:{free_port()}")
    scope = {"type": "websocket", "path": "/ws"}
    asyncio.run(wrapped(scope, receive, send))
    assert seen == [(scope, receive, send)] and wrapped.sender.sent == 0
