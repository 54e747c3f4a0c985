"""The agent's request datagram listener: round trips, and garbage dropped by reason."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrometer.agent.requests.listener import Rejected, RequestListener, parse_datagram
from pyrometer.agent.requests.probe import RequestProbe, trace_id_of
from pyrometer.agent.shared.errors import ConfigError
from support.request_servers import Records

GOOD: dict[str, Any] = {"v": 1, "end_ns": 1_700_000_000_000_000_000, "latency_ns": 5_000_000,
                        "request_bytes": 10, "response_bytes": 20, "route": "/x", "method": "GET",
                        "status": 200, "pid": 42}


def datagram(**changes: Any) -> bytes:
    fields = {**GOOD, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


@given(method=st.sampled_from(["GET", "POST", "DELETE"]), route=st.text(max_size=200),
       status=st.integers(100, 599), size=st.none() | st.integers(0, 2**40),
       chunks=st.lists(st.integers(1, 10_000), max_size=20), request_bytes=st.integers(0, 10**9))
def test_probe_datagrams_round_trip(method: str, route: str, status: int, size: int | None,
                                    chunks: list[int], request_bytes: int) -> None:
    probe = RequestProbe(method)
    probe.status, probe.request_bytes, probe.app_size = status, request_bytes, size
    for chunk in chunks:
        probe.body_chunk(chunk)
    record = parse_datagram(probe.datagram(route, 7))
    assert (record.method, record.route, record.status, record.app_size, record.pid) == (
        method, route, status, size, 7)
    assert (record.request_bytes, record.response_bytes) == (request_bytes, sum(chunks))
    assert record.chunk_gaps_us == tuple(probe.gaps) and len(record.chunk_gaps_us) == max(0, len(chunks) - 1)
    assert (record.ttfb_ns is None) == (not chunks) and record.source == "middleware"


@pytest.mark.parametrize(("data", "reason"), [
    (b"\xff\xfe not utf-8", "not_json"),
    (b"{truncated", "not_json"),
    (b"[" * 10_000, "not_json"),
    (b"[1, 2]", "not_object"),
    (datagram(v=2), "version"),
    (datagram(v=True), "version"),
    (datagram(v=...), "version"),
    (datagram(status=...), "missing:status"),
    (datagram(status="200"), "type:status"),
    (datagram(status=True), "type:status"),
    (datagram(latency_ns=-1), "range:latency_ns"),
    (datagram(latency_ns=1.5), "type:latency_ns"),
    (datagram(response_bytes=2**50), "range:response_bytes"),
    (datagram(route=["/x"]), "type:route"),
    (datagram(route="r" * 5000), "range:route"),
    (datagram(ttfb_ns=10**9), "range:ttfb_ns"),  # after the response ended
    (datagram(chunk_gaps_us=[1, -2]), "range:chunk_gaps_us"),
    (datagram(chunk_gaps_us=[1, "2"]), "type:chunk_gaps_us"),
    (datagram(chunk_gaps_us=[1] * 5000), "range:chunk_gaps_us"),
    (datagram(app_size=-3), "range:app_size"),
    (datagram(trace_id=5), "type:trace_id"),
    (datagram(trace_id="4BF92F3577B34DA6A3CE929D0E0E4736"), "range:trace_id"),
    (datagram(trace_id="4bf92f35"), "range:trace_id"),
])
def test_bad_datagrams_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_datagram(data)
    assert caught.value.reason == reason


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(("traceparent", "trace_id"), [
    (f"00-{TRACE_ID}-00f067aa0ba902b7-01", TRACE_ID),
    (f" 00-{TRACE_ID}-00f067aa0ba902b7-00 ", TRACE_ID),
    (f"01-{TRACE_ID}-00f067aa0ba902b7-01-what-the-future-adds", TRACE_ID),  # a later version's tail
    (f"00-{TRACE_ID}-00f067aa0ba902b7-01-more", None),  # version 00 has exactly four fields
    (f"ff-{TRACE_ID}-00f067aa0ba902b7-01", None),
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
    (f"00-{TRACE_ID}-{'0' * 16}-01", None),
    (f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01", None),
    ("00-4bf92f35-00f067aa0ba902b7-01", None),
    ("", None),
    (None, None),
    (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),  # binary metadata
])
def test_trace_ids_are_taken_only_from_valid_traceparents(traceparent: object, trace_id: str | None) -> None:
    assert trace_id_of(traceparent) == trace_id


def test_a_trace_id_round_trips_and_is_optional() -> None:
    probe = RequestProbe("GRPC")
    probe.status, probe.trace_id = 200, TRACE_ID
    assert parse_datagram(probe.datagram("/m.S/Predict", 1)).trace_id == TRACE_ID
    assert parse_datagram(datagram()).trace_id is None


def test_listener_drops_garbage_by_reason_and_keeps_receiving() -> None:
    garbage = [b"", b"hello", b"[]", datagram(v=9), datagram(v=9), datagram(status=-1),
               datagram(method=...), b"\x00" * 60_000]
    with Records() as records, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in garbage:
            sock.sendto(data, ("127.0.0.1", records.port))
        sock.sendto(datagram(route="/after-garbage"), ("127.0.0.1", records.port))
        [record] = records.wait(1)  # datagrams on loopback keep their order
        rejected = dict(records.listener.rejected)
    assert record.route == "/after-garbage" and record.latency_ns == 5_000_000
    assert rejected == {"not_json": 3, "not_object": 1, "version": 2, "range:status": 1,
                        "missing:method": 1}
    assert records.listener.received == 1


def test_a_consumer_that_raises_does_not_stop_the_listener() -> None:
    async def body() -> list[str]:
        seen: list[str] = []
        both = asyncio.Event()

        def consume(record: Any) -> None:
            seen.append(record.route)
            if len(seen) == 2:
                both.set()
            raise RuntimeError("consumer bug")

        listener = RequestListener("127.0.0.1:0")
        port = await listener.start(consume)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for route in ("/a", "/b"):
                    sock.sendto(datagram(route=route), ("127.0.0.1", port))
                await asyncio.wait_for(both.wait(), 30)
        finally:
            listener.close()
        return seen

    assert asyncio.run(body()) == ["/a", "/b"]


def test_bad_listen_address_is_a_config_error() -> None:
    async def start(listen: str) -> int:
        return await RequestListener(listen).start(lambda record: None)

    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        asyncio.run(start("7072"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(ConfigError, match="cannot bind"):
            asyncio.run(start(f"127.0.0.1:{taken.getsockname()[1]}"))

