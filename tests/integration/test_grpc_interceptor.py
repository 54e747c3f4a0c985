"""The gRPC interceptors in real grpc servers (sync and asyncio), reporting to a real RequestListener.

The service is defined here with grpc's generic handlers and bytes messages (no generated
code): every kind of call, a failing and an aborting handler, and one that outlives its
deadline. Sizes are exact, since a bytes message is its own serialization.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest

from pyrometer.agent.grpc_interceptor import (
    PyrometerAioServerInterceptor,
    PyrometerServerInterceptor,
    http_status,
    record_size,
)
from pyrometer.agent.shared.model import RequestRecord
from support.request_servers import DEADLINE_S, Records, free_port

pytestmark = pytest.mark.integration

SERVICE = "test.Model"
DELAYS_S = (0.03, 0.05, 0.05)  # before each streamed message: first message at 30 ms, gaps 50 ms
TOLERANCE_NS = 10_000_000
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
SHORT_DEADLINE_S = 0.2
CALLS = 8  # recorded by exercise(): every call but the one to an unimplemented method


class Boom(Exception):
    """The handler's own failure, which must reach the server unchanged."""


def token(i: int) -> bytes:
    return b"token %d" % i


class SyncService:
    """The service for grpc.server; each handler notes what it did by its own clock."""

    def __init__(self) -> None:
        self.stream_times: list[int] = []
        self.raised: list[BaseException] = []

    def handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Predict": grpc.unary_unary_rpc_method_handler(self.predict),
            "Generate": grpc.unary_stream_rpc_method_handler(self.generate),
            "Upload": grpc.stream_unary_rpc_method_handler(self.upload),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Missing": grpc.unary_unary_rpc_method_handler(self.missing),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
            "Endless": grpc.unary_stream_rpc_method_handler(self.endless),
        })

    def predict(self, request: bytes, context: Any) -> bytes:
        record_size(len(request))
        return request * 2

    def generate(self, request: bytes, context: Any) -> Iterator[bytes]:
        self.stream_times = [time.perf_counter_ns()]
        for i, delay in enumerate(DELAYS_S):
            time.sleep(delay)  # the handler's own pace, which the record must reproduce
            self.stream_times.append(time.perf_counter_ns())
            yield token(i)

    def upload(self, requests: Iterator[bytes], context: Any) -> bytes:
        return b"%d" % sum(len(r) for r in requests)

    def chat(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for request in requests:
            yield request.upper()

    def fail(self, request: bytes, context: Any) -> bytes:
        self.raised.append(Boom("handler failure"))
        raise self.raised[-1]

    def missing(self, request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such model")
        raise AssertionError("abort returns")

    def slow(self, request: bytes, context: Any) -> bytes:
        ended = threading.Event()
        context.add_callback(ended.set)  # runs when the deadline ends the call
        ended.wait(DEADLINE_S)
        return b"too late"

    def endless(self, request: bytes, context: Any) -> Iterator[bytes]:
        ended = threading.Event()
        context.add_callback(ended.set)  # runs when the client cancels
        yield token(0)
        ended.wait(DEADLINE_S)


class AioService(SyncService):
    """The same service for grpc.aio.server, with coroutine and async generator handlers."""

    def handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Predict": grpc.unary_unary_rpc_method_handler(self.predict_async),
            "Generate": grpc.unary_stream_rpc_method_handler(self.generate_async),
            "Upload": grpc.stream_unary_rpc_method_handler(self.upload_async),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat_async),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail_async),
            "Missing": grpc.unary_unary_rpc_method_handler(self.missing_async),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow_async),
            "Endless": grpc.unary_stream_rpc_method_handler(self.endless_async),
        })

    async def predict_async(self, request: bytes, context: Any) -> bytes:
        await asyncio.to_thread(record_size, len(request))  # from a thread of this call's context
        return request * 2

    async def generate_async(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self.stream_times = [time.perf_counter_ns()]
        for i, delay in enumerate(DELAYS_S):
            await asyncio.sleep(delay)
            self.stream_times.append(time.perf_counter_ns())
            yield token(i)

    async def upload_async(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        return b"%d" % sum([len(r) async for r in requests])

    async def chat_async(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request.upper()

    async def fail_async(self, request: bytes, context: Any) -> bytes:
        self.raised.append(Boom("handler failure"))
        raise self.raised[-1]

    async def missing_async(self, request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such model")
        raise AssertionError("abort returns")

    async def slow_async(self, request: bytes, context: Any) -> bytes:
        await asyncio.sleep(DEADLINE_S)  # cancelled by the deadline
        return b"too late"

    async def endless_async(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield token(0)
        await asyncio.sleep(DEADLINE_S)  # cancelled when the client cancels


def exercise(port: int) -> list[tuple[str, grpc.StatusCode]]:
    """Every kind of call once, from a real client: [(method, code the client got)]."""
    got: list[tuple[str, grpc.StatusCode]] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=DEADLINE_S)

        def call(name: str, kind: str, request: Any, timeout: float = DEADLINE_S) -> Any:
            stub = getattr(channel, kind)(f"/{SERVICE}/{name}")
            try:
                response = stub(request, timeout=timeout, metadata=(("traceparent", TRACEPARENT),))
                response = list(response) if kind.endswith("_stream") else response
            except grpc.RpcError as err:
                got.append((name, err.code()))
                return None
            got.append((name, grpc.StatusCode.OK))
            return response

        assert call("Predict", "unary_unary", b"x" * 100) == b"x" * 200
        assert call("Generate", "unary_stream", b"go") == [token(i) for i in range(len(DELAYS_S))]
        assert call("Upload", "stream_unary", iter([b"a" * 10, b"b" * 20, b"c" * 30])) == b"60"
        assert call("Chat", "stream_stream", iter([b"hi", b"there"])) == [b"HI", b"THERE"]
        assert call("Fail", "unary_unary", b"f") is None
        assert call("Missing", "unary_unary", b"m") is None
        assert call("Slow", "unary_unary", b"s", timeout=SHORT_DEADLINE_S) is None
        assert call("Unimplemented", "unary_unary", b"u") is None
        endless = channel.unary_stream(f"/{SERVICE}/Endless")(b"e", timeout=DEADLINE_S,
                                                               metadata=(("traceparent", TRACEPARENT),))
        assert next(endless) == token(0)
        endless.cancel()  # the client gives up on a stream it has read from
        got.append(("Endless", endless.code()))
    return got


def check(records: list[RequestRecord], got: list[tuple[str, grpc.StatusCode]], service: SyncService) -> None:
    assert got == [("Predict", grpc.StatusCode.OK), ("Generate", grpc.StatusCode.OK),
                   ("Upload", grpc.StatusCode.OK), ("Chat", grpc.StatusCode.OK),
                   ("Fail", grpc.StatusCode.UNKNOWN), ("Missing", grpc.StatusCode.NOT_FOUND),
                   ("Slow", grpc.StatusCode.DEADLINE_EXCEEDED),
                   ("Unimplemented", grpc.StatusCode.UNIMPLEMENTED), ("Endless", grpc.StatusCode.CANCELLED)]
    by_route = {r.route.rsplit("/", 1)[1]: r for r in records}
    assert set(by_route) == {name for name, _ in got} - {"Unimplemented"}, "not one record per call"
    assert len(records) == len(by_route)
    assert {name: r.status for name, r in by_route.items()} == {
        name: http_status(code) for name, code in got if name != "Unimplemented"}
    assert by_route["Slow"].status == 504 and by_route["Fail"].status == 500
    assert by_route["Endless"].status == 499 and by_route["Missing"].status == 404
    assert all(r.route == f"/{SERVICE}/{name}" and r.method == "GRPC" and r.trace_id == TRACE_ID
               and r.pid > 0 and r.end_ns > 0 and r.latency_ns > 0 for name, r in by_route.items())
    sizes = {name: (r.request_bytes, r.response_bytes) for name, r in by_route.items()}
    assert sizes == {"Predict": (100, 200), "Generate": (2, sum(len(token(i)) for i in range(3))),
                     "Upload": (60, 2), "Chat": (7, 7), "Fail": (1, 0), "Missing": (1, 0), "Slow": (1, 0),
                     "Endless": (1, len(token(0)))}
    assert by_route["Predict"].app_size == 100
    assert by_route["Slow"].latency_ns >= SHORT_DEADLINE_S * 1e9 - TOLERANCE_NS
    stream = by_route["Generate"]
    assert stream.ttfb_ns is not None and stream.ttfb_ns < stream.latency_ns
    assert stream.ttfb_ns >= DELAYS_S[0] * 1e9
    assert abs(stream.ttfb_ns - (service.stream_times[1] - service.stream_times[0])) <= TOLERANCE_NS
    app_gaps = [b - a for a, b in zip(service.stream_times[1:], service.stream_times[2:], strict=False)]
    assert len(stream.chunk_gaps_us) == len(app_gaps) == len(DELAYS_S) - 1
    for gap_us, app_gap_ns in zip(stream.chunk_gaps_us, app_gaps, strict=True):
        assert abs(gap_us * 1000 - app_gap_ns) <= TOLERANCE_NS, (stream.chunk_gaps_us, app_gaps)


def test_sync_server_records_every_kind_of_call() -> None:
    service = SyncService()
    with Records() as records:
        interceptor = PyrometerServerInterceptor(address=records.address)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[interceptor])
        server.add_generic_rpc_handlers([service.handlers()])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            got = exercise(port)
            # eight records; then one more call and exactly one more record: nothing sent twice
            records.wait(CALLS)
            exercise_one(port)
            received = records.wait(CALLS + 1)
        finally:
            server.stop(None)
    check(received[:CALLS], got, service)
    assert received[CALLS].route == f"/{SERVICE}/Predict" and received[CALLS].status == 200
    assert interceptor.sender.errors == 0 and interceptor.sender.sent == CALLS + 1
    assert [type(e) for e in service.raised] == [Boom]


def exercise_one(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert channel.unary_unary(f"/{SERVICE}/Predict")(b"z", timeout=DEADLINE_S) == b"zz"


def test_aio_server_records_every_kind_of_call() -> None:
    service = AioService()

    async def serve(address: str) -> tuple[list[tuple[str, grpc.StatusCode]], PyrometerAioServerInterceptor]:
        interceptor = PyrometerAioServerInterceptor(address=address)
        server = grpc.aio.server(interceptors=[interceptor])
        server.add_generic_rpc_handlers([service.handlers()])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            got = await asyncio.to_thread(exercise, port)  # a sync client, off the server's loop
            await asyncio.to_thread(records.wait, CALLS)
            await asyncio.to_thread(exercise_one, port)
            await asyncio.to_thread(records.wait, CALLS + 1)
        finally:
            await server.stop(None)
        return got, interceptor

    with Records() as records:
        got, interceptor = asyncio.run(serve(records.address))
        received = records.wait(CALLS + 1)
    check(received[:CALLS], got, service)
    assert received[CALLS].route == f"/{SERVICE}/Predict" and received[CALLS].status == 200
    assert interceptor.sender.errors == 0 and interceptor.sender.sent == CALLS + 1
    assert [type(e) for e in service.raised] == [Boom]


def test_with_the_agent_down_calls_are_served_and_nothing_raises() -> None:
    for address, errors in ((f"127.0.0.1:{free_port()}", 0), ("255.255.255.255:7072", 3)):
        interceptor = PyrometerServerInterceptor(address=address)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[interceptor])
        server.add_generic_rpc_handlers([SyncService().handlers()])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            for _ in range(3):
                exercise_one(port)
        finally:
            server.stop(None)
        assert interceptor.sender.errors == errors


def test_a_bad_address_argument_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        PyrometerServerInterceptor(address="nowhere")


def test_status_mapping_counts_server_failures_as_errors_and_client_ones_not() -> None:
    errors = {code for code in grpc.StatusCode if http_status(code) >= 500}
    assert errors == {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
                      grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.DATA_LOSS,
                      grpc.StatusCode.UNIMPLEMENTED}
    assert http_status(grpc.StatusCode.OK) == 200 and http_status(grpc.StatusCode.CANCELLED) == 499


def test_importing_the_interceptor_loads_grpc_and_of_pyrometer_only_the_probe() -> None:
    code = (
        "import sys, json\n"
        "import grpc, grpc.aio\n"
        "before = set(sys.modules)\n"
        "import pyrometer.agent.grpc_interceptor\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=DEADLINE_S).stdout
    loaded = json.loads(out)
    assert {m for m in loaded if m.split(".")[0] == "pyrometer"} <= {
        "pyrometer", "pyrometer.agent", "pyrometer.agent.grpc_interceptor",
        "pyrometer.agent.requests", "pyrometer.agent.requests.probe"}, loaded
    foreign = {m for m in loaded if m.split(".")[0] not in sys.stdlib_module_names | {"pyrometer"}}
    assert not foreign, foreign
