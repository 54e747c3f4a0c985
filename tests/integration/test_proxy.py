"""The agent's reverse proxy between a real aiohttp client and a real aiohttp upstream."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from pyrometer.agent.requests.proxy import ReverseProxy, parse_upstream
from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import RequestRecord
from support.request_servers import DEADLINE_S, free_port

pytestmark = pytest.mark.integration

DELAYS_S = (0.03, 0.05, 0.05, 0.05)  # before each SSE event: ttfb 30 ms, then 50 ms gaps
TOLERANCE_NS = 10_000_000
UPLOAD = 3 * 1024 * 1024


class Upstream:
    """The model server stand-in; it notes what it received and when it wrote."""

    def __init__(self) -> None:
        self.sse_times: list[int] = []
        self.gate = asyncio.Event()  # /gate holds its second chunk until the client has the first
        self.upload_started = asyncio.Event()
        self.seen: dict[str, object] = {}
        self.app = web.Application()
        self.app.router.add_get("/sse", self.sse)
        self.app.router.add_get("/gate", self.gated)
        self.app.router.add_post("/upload", self.upload)
        self.app.router.add_get("/headers/{n}", self.headers)
        self.app.router.add_get("/cut", self.cut)

    async def sse(self, request: web.Request) -> web.StreamResponse:
        self.sse_times = [time.perf_counter_ns()]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, delay in enumerate(DELAYS_S):
            await asyncio.sleep(delay)
            await response.write(b"data: token %d\n\n" % i)
            self.sse_times.append(time.perf_counter_ns())
        await response.write_eof()
        return response

    async def gated(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first")
        await asyncio.wait_for(self.gate.wait(), DEADLINE_S)
        await response.write(b"second")
        return response

    async def upload(self, request: web.Request) -> web.Response:
        total = 0
        self.seen = {"length": request.content_length, "chunked": "chunked" in
                     request.headers.get("Transfer-Encoding", "")}
        async for chunk in request.content.iter_any():
            total += len(chunk)
            self.upload_started.set()
        return web.json_response({"bytes": total})

    async def headers(self, request: web.Request) -> web.Response:
        self.seen = {"headers": CIMultiDict(request.headers), "path_qs": request.raw_path}
        response = web.Response(status=404, text="no such model",
                                headers={"X-Model": "m1", "Keep-Alive": "timeout=5"})
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    async def cut(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"partial")
        assert request.transport is not None
        request.transport.abort()  # the model server died mid-stream
        return response


Body = Callable[[aiohttp.ClientSession, str, Upstream, list[RequestRecord]], Awaitable[None]]


def run(body: Body, upstream_port: int | None = None) -> list[RequestRecord]:
    """Upstream and proxy on 127.0.0.1 free ports, a client session; the records emitted."""
    async def main() -> list[RequestRecord]:
        upstream = Upstream()
        runner = web.AppRunner(upstream.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = upstream_port or runner.addresses[0][1]
        records: list[RequestRecord] = []
        proxy = ReverseProxy("127.0.0.1:0", f"127.0.0.1:{port}")
        proxy_port = await proxy.start(records.append)
        try:
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                await body(session, f"http://127.0.0.1:{proxy_port}", upstream, records)
        finally:
            await proxy.close()
            await runner.cleanup()
        return records

    return asyncio.run(asyncio.wait_for(main(), DEADLINE_S))


def test_chunks_reach_the_client_while_the_upstream_is_still_writing() -> None:
    async def body(session: aiohttp.ClientSession, url: str, upstream: Upstream,
                   records: list[RequestRecord]) -> None:
        async with session.get(f"{url}/gate") as response:
            # a proxy that buffered the body would never hand over "first": the upstream
            # sends "second" only once the client has it
            assert await asyncio.wait_for(response.content.readany(), 10) == b"first"
            upstream.gate.set()
            assert await response.content.read() == b"second"

    [record] = run(body)
    assert (record.status, record.response_bytes, record.source) == (200, 11, "proxy")


def test_sse_timing_is_recorded_within_10_ms_of_the_upstream() -> None:
    arrivals: list[int] = []

    async def body(session: aiohttp.ClientSession, url: str, upstream: Upstream,
                   records: list[RequestRecord]) -> None:
        async with session.get(f"{url}/sse") as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            async for chunk in response.content.iter_any():
                arrivals.append(time.perf_counter_ns())
                assert chunk.startswith(b"data: token")
        times = upstream.sse_times
        [record] = records
        assert record.ttfb_ns is not None
        assert abs(record.ttfb_ns - (times[1] - times[0])) <= TOLERANCE_NS
        upstream_gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
        assert len(record.chunk_gaps_us) == len(upstream_gaps) == len(arrivals) - 1 == 3
        for got_us, want_ns in zip(record.chunk_gaps_us, upstream_gaps, strict=True):
            assert abs(got_us * 1000 - want_ns) <= TOLERANCE_NS
        for got_ns, want_ns in zip([b - a for a, b in zip(arrivals, arrivals[1:], strict=False)],
                                   upstream_gaps, strict=True):  # live at the client too
            assert abs(got_ns - want_ns) <= TOLERANCE_NS

    [record] = run(body)
    assert record.response_bytes == 4 * len(b"data: token 0\n\n") and record.route == "/sse"
    assert record.latency_ns >= record.ttfb_ns + sum(record.chunk_gaps_us) * 1000  # type: ignore[operator]


def test_request_bodies_stream_up_and_are_counted() -> None:
    async def chunks(upstream: Upstream) -> AsyncIterator[bytes]:
        yield b"u" * 65536
        # the rest only once the upstream is reading: the proxy must not wait for it all
        await asyncio.wait_for(upstream.upload_started.wait(), 10)
        for _ in range(UPLOAD // 65536 - 1):
            yield b"u" * 65536

    async def body(session: aiohttp.ClientSession, url: str, upstream: Upstream,
                   records: list[RequestRecord]) -> None:
        async with session.post(f"{url}/upload", data=chunks(upstream)) as response:
            assert await response.json() == {"bytes": UPLOAD}
        assert upstream.seen["chunked"] is True
        async with session.post(f"{url}/upload", data=b"k" * 1000) as response:
            assert await response.json() == {"bytes": 1000}
        assert upstream.seen == {"length": 1000, "chunked": False}

    records = run(body)
    assert [r.request_bytes for r in records] == [UPLOAD, 1000]
    assert [r.method for r in records] == ["POST", "POST"]


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_headers_status_and_query_pass_through_without_hop_by_hop() -> None:
    async def body(session: aiohttp.ClientSession, url: str, upstream: Upstream,
                   records: list[RequestRecord]) -> None:
        headers = {"X-Forwarded-For": "203.0.113.9", "X-Request-Id": "r1", "Connection": "keep-alive, X-Hop",
                   "X-Hop": "drop me", "Host": "models.example", "traceparent": TRACEPARENT}
        async with session.get(f"{url}/headers/123?q=a%20b&x=1", headers=headers) as response:
            assert response.status == 404 and await response.text() == "no such model"
            assert response.headers["X-Model"] == "m1" and "Keep-Alive" not in response.headers
            assert sorted(response.headers.getall("Set-Cookie")) == ["a=1; Path=/", "b=2; Path=/"]
        sent = upstream.seen["headers"]
        assert isinstance(sent, CIMultiDict)
        assert sent["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1" and sent["X-Forwarded-Proto"] == "http"
        assert sent["X-Request-Id"] == "r1" and sent["Host"] == "models.example"
        assert "X-Hop" not in sent and sent.get("Connection", "keep-alive") == "keep-alive"
        assert upstream.seen["path_qs"] == "/headers/123?q=a%20b&x=1"
        assert sent["traceparent"] == TRACEPARENT  # the trace goes on upstream too

    [record] = run(body)
    assert (record.status, record.route, record.response_bytes) == (404, "/headers/{id}", 13)
    assert record.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_upstream_down_is_a_recorded_502() -> None:
    async def body(session: aiohttp.ClientSession, url: str, upstream: Upstream,
                   records: list[RequestRecord]) -> None:
        for _ in range(3):
            async with session.get(f"{url}/sse") as response:
                assert response.status == 502 and "unreachable" in await response.text()

    records = run(body, upstream_port=free_port())
    assert [r.status for r in records] == [502] * 3
    assert all(r.response_bytes > 0 and r.latency_ns > 0 for r in records)


def test_a_stream_cut_by_the_upstream_is_cut_for_the_client_and_recorded() -> None:
    async def body(session: aiohttp.ClientSession, url: str, upstream: Upstream,
                   records: list[RequestRecord]) -> None:
        async with session.get(f"{url}/cut") as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        async with session.get(f"{url}/headers/1") as response:  # and the proxy carries on
            assert response.status == 404

    records = run(body)
    assert [(r.route, r.status) for r in records] == [("/cut", 502), ("/headers/{id}", 404)]


def test_every_request_is_recorded_once() -> None:
    async def body(session: aiohttp.ClientSession, url: str, upstream: Upstream,
                   records: list[RequestRecord]) -> None:
        replies = await asyncio.gather(*(session.get(f"{url}/headers/{i}") for i in range(50)))
        for reply in replies:
            await reply.read()
            reply.release()

    assert len(run(body)) == 50


def test_bad_upstream_and_missing_aiohttp_are_config_errors() -> None:
    assert str(parse_upstream("http://127.0.0.1:8000/")) == "http://127.0.0.1:8000"
    for bad in ("8000", "ftp://host:1", "http://host:1/base"):
        with pytest.raises(ConfigError, match="expected HOST:PORT"):
            parse_upstream(bad)
    code = ("import sys; sys.modules['aiohttp'] = None\n"
            "try:\n    import pyrometer.agent.requests.proxy\n"
            "except Exception as err:\n    print(type(err).__name__, err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=DEADLINE_S, check=True).stdout
    assert out.startswith("ConfigError") and "pip install 'pyrometer[proxy]'" in out
    assert json.dumps(out)  # one line a user can act on
