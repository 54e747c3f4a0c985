"""Fuzzing the gRPC ingest of a real server: hostile batches, bytes and connections.

Every answer must be an ack or INVALID_ARGUMENT / RESOURCE_EXHAUSTED (never INTERNAL
or UNKNOWN: those would say the collector broke, and agents retry them for ever), a
rejected batch must leave every table as it was, and the server must still answer
its health check afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import SampleKey
from pyrometer.collector.ingest.server import IngestConfig, IngestServer, start_ingest_server
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.proto import ingest_pb2
from support.ingest_builder import StreamEncoder, stack
from support.telemetry_builder import everything

pytestmark = pytest.mark.integration
METHOD = "/pyrometer.v1.Ingest/Stream"
MAX_MESSAGE = 1024 * 1024  # small, so that an oversize batch is cheap to build
ACCEPTED_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
FUZZ = settings(max_examples=120, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
_agents = itertools.count()


class Rig:
    """A real ingest server on a real DuckDB file, its loop in a thread of its own."""

    def __init__(self, path: Path, decode_workers: int = 0) -> None:
        self.store = DuckDBStore(path)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = IngestConfig(listen="127.0.0.1:0", max_message_bytes=MAX_MESSAGE,
                              commit_delay_s=0.0, decode_workers=decode_workers)
        self.server: IngestServer = self.call(start_ingest_server(self.store, config))
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{self.server.port}",
            options=[("grpc.max_send_message_length", 64 * MAX_MESSAGE)])

    def call(self, coro: object) -> IngestServer:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)  # type: ignore[arg-type]

    def exchange(self, *messages: bytes) -> tuple[list[ingest_pb2.Ack], grpc.StatusCode | None]:
        """Send raw messages on one stream; the acks, and the status if it failed."""
        stream = self.channel.stream_stream(METHOD, request_serializer=None,
                                            response_deserializer=ingest_pb2.Ack.FromString)
        try:
            return list(stream(iter(messages), timeout=60)), None
        except grpc.RpcError as err:
            return [], err.code()

    def healthy(self) -> bool:
        stub = health_pb2_grpc.HealthStub(self.channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service="pyrometer.v1.Ingest"), timeout=10)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        self.channel.close()
        self.call(self.server.stop(0))  # type: ignore[arg-type]
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.store.close()


# decoded in the event loop, and in a decode worker process (ingest/workers.py): the same
# answers either way
@pytest.fixture(scope="module", params=[0, 1], ids=["in-loop", "decode-worker"])
def rig(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Rig]:
    rig = Rig(tmp_path_factory.mktemp("fuzz") / "fuzz.duckdb", decode_workers=request.param)
    yield rig
    assert rig.healthy()
    rig.close()


def valid_batch() -> ingest_pb2.Batch:
    """A self-contained first batch of a fresh agent: dictionary, window, every record kind."""
    counts = {SampleKey(stack("main", "serve", "predict")): 5,
              SampleKey(stack("main", "serve"), thread="worker-1"): 2}
    return StreamEncoder(agent_id=f"fuzz-{next(_agents)}").batch(1, counts, telemetry=everything())


# --- mutations: each takes the batch and a draw function, and breaks one thing --------

Mutation = Callable[[ingest_pb2.Batch, st.DataObject], None]
U32, I64, U64 = st.integers(0, 2**32 - 1), st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**64 - 1)
TEXT = st.one_of(st.text(max_size=50), st.text(min_size=4000, max_size=5000),
                 st.just("x" * 200_000), st.just("a\x00b"))


def _set_first(column: Any, value: int) -> None:
    # earlier mutations of the same example may have emptied the column
    if len(column):
        column[0] = value
    else:
        column.append(value)


def _window_ids(b: ingest_pb2.Batch, d: st.DataObject) -> None:
    column = d.draw(st.sampled_from(["stack_ids", "stack_id_deltas", "thread_ids", "pids"]))
    value = d.draw(st.integers(-(2**31), 2**31 - 1) if column == "pids" else U32)
    _set_first(getattr(b.profile, column), value)


def _counts(b: ingest_pb2.Batch, d: st.DataObject) -> None:
    _set_first(b.profile.counts, d.draw(st.one_of(st.just(0), U64, st.just(2**64 - 1))))


def _deep_stack(b: ingest_pb2.Batch, d: st.DataObject) -> None:
    depth = d.draw(st.integers(400, 5000))
    b.dictionary.stacks.add().frames.extend([0] * depth)
    _set_first(b.profile.stack_ids, len(b.dictionary.stacks) - 1)


def _prefixes(b: ingest_pb2.Batch, d: st.DataObject) -> None:
    stack = b.dictionary.stacks[d.draw(st.integers(0, len(b.dictionary.stacks) - 1))]
    stack.back = d.draw(st.one_of(st.integers(0, 3), U32))
    stack.keep = d.draw(st.one_of(st.integers(0, 4), st.integers(500, 600), U32))


def _strings(b: ingest_pb2.Batch, d: st.DataObject) -> None:
    text = d.draw(TEXT)
    where = d.draw(st.sampled_from(["dictionary", "agent_id", "service", "label", "event"]))
    if where == "dictionary":
        b.dictionary.strings[d.draw(st.integers(0, len(b.dictionary.strings) - 1))] = text
    elif where == "label":
        b.agent.labels[d.draw(st.text(max_size=5))] = text
    elif where == "event":
        b.events[0].kind = text
    else:
        setattr(b.agent, where, text)


def _bases(b: ingest_pb2.Batch, d: st.DataObject) -> None:
    name = d.draw(st.sampled_from(["string_base", "frame_base", "stack_base"]))
    setattr(b.dictionary, name, d.draw(U32))


def _references(b: ingest_pb2.Batch, d: st.DataObject) -> None:
    which = d.draw(st.sampled_from(["frame_name", "stack_frame", "route"]))
    if which == "frame_name":
        b.dictionary.frames[0].name = d.draw(U32)
    elif which == "stack_frame":
        b.dictionary.stacks[0].frames.append(d.draw(U32))
    else:
        b.requests[0].route = d.draw(U32)


def _times(b: ingest_pb2.Batch, d: st.DataObject) -> None:
    where = d.draw(st.sampled_from(["start", "end", "gpu", "request", "events", "agent_stats"]))
    value = d.draw(st.one_of(I64, st.integers(2**62, 2**63 - 1), st.integers(-(2**40), 2**40)))
    if where == "start":
        b.profile.start_unix_nanos = value
    elif where == "end":
        b.profile.end_unix_nanos = value
    elif where == "request":
        b.requests[0].end_unix_nanos = value
    else:
        getattr(b, where)[0].time_unix_nanos = value


def _floats(b: ingest_pb2.Batch, d: st.DataObject) -> None:
    value = d.draw(st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0, 1e300]),
                             st.floats(allow_nan=True, allow_infinity=True, width=32)))
    target = d.draw(st.sampled_from(["rate", "gpu", "process", "host", "agent_stats"]))
    if target == "rate":
        b.profile.rate_hz = value
    elif target == "gpu":
        b.gpu[0].temperature_c = value
    elif target == "process":
        b.process[0].cpu_user = value
    elif target == "host":
        b.host[0].load1 = value
    else:
        b.agent_stats[0].cpu_cores = value


def _integers(b: ingest_pb2.Batch, d: st.DataObject) -> None:
    record = d.draw(st.sampled_from(["gpu", "process", "host", "requests", "events",
                                     "agent_stats"]))
    message = getattr(b, record)[0]
    fields = [f for f in message.DESCRIPTOR.fields
              if f.type in (f.TYPE_UINT32, f.TYPE_UINT64, f.TYPE_INT32, f.TYPE_INT64)
              and not f.is_repeated]
    field = d.draw(st.sampled_from(fields))
    bits = 32 if field.type in (field.TYPE_UINT32, field.TYPE_INT32) else 64
    signed = field.type in (field.TYPE_INT32, field.TYPE_INT64)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    setattr(message, field.name, d.draw(st.integers(low, high)))


def _shape(b: ingest_pb2.Batch, d: st.DataObject) -> None:
    what = d.draw(st.sampled_from(["columns", "default_columns", "seq", "labels", "records",
                                   "empty_agent"]))
    if what == "columns":  # columns of unequal length
        if len(b.profile.counts):
            del b.profile.counts[-1]
        else:
            b.profile.counts.append(1)
    elif what == "default_columns":  # empty means all default, any other length is wrong
        column = getattr(b.profile, d.draw(st.sampled_from(["thread_ids", "pids"])))
        del column[:]
        column.extend([0] * d.draw(st.integers(0, 4)))
    elif what == "seq":
        b.seq = d.draw(st.sampled_from([0, 2**63, 2**64 - 1]))
    elif what == "labels":
        for i in range(d.draw(st.integers(60, 200))):
            b.agent.labels[f"k{i}"] = "v"
    elif what == "records":
        b.requests.extend([b.requests[0]] * d.draw(st.integers(1, 3)))
        b.events.add()  # an event without a kind
    else:
        b.agent.Clear()


MUTATIONS: list[Mutation] = [_window_ids, _counts, _deep_stack, _prefixes, _strings, _bases,
                             _references, _times, _floats, _integers, _shape]


def check(rig: Rig, *messages: bytes) -> tuple[list[ingest_pb2.Ack], grpc.StatusCode | None]:
    before = rig.store.table_rows()
    acks, code = rig.exchange(*messages)
    assert code is None or code in ACCEPTED_CODES, code
    if code is not None:
        assert rig.store.table_rows() == before  # a rejected batch stores nothing
    return acks, code


@FUZZ
@given(data=st.data(), mutations=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3))
def test_mutated_batches_get_an_ack_or_a_client_error_and_a_rejected_one_stores_nothing(
    rig: Rig, data: st.DataObject, mutations: list[Mutation],
) -> None:
    batch = valid_batch()
    for mutate in mutations:
        mutate(batch, data)
    acks, code = check(rig, batch.SerializeToString())
    if code is None:
        assert [a.seq for a in acks] == [batch.seq]


@FUZZ
@given(data=st.data())
def test_corrupted_bytes_of_a_valid_batch(rig: Rig, data: st.DataObject) -> None:
    raw = bytearray(valid_batch().SerializeToString())
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    check(rig, bytes(raw))


@FUZZ
@given(raw=st.binary(max_size=4096))
def test_random_bytes_as_a_grpc_message(rig: Rig, raw: bytes) -> None:
    check(rig, raw)


def test_invalid_utf8_in_a_string_is_invalid_argument(rig: Rig) -> None:
    batch = valid_batch()
    batch.dictionary.strings[0] = "MARK"
    raw = batch.SerializeToString().replace(b"MARK", b"\xff\xfe\x80M", 1)
    assert check(rig, raw)[1] is grpc.StatusCode.INVALID_ARGUMENT


def test_a_batch_over_the_size_limit_is_resource_exhausted(rig: Rig) -> None:
    batch = valid_batch()
    batch.dictionary.strings.extend(["x" * 1000] * (2 * MAX_MESSAGE // 1000))
    assert check(rig, batch.SerializeToString())[1] is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_valid_batch_after_a_rejected_one_on_a_new_stream_is_stored(rig: Rig) -> None:
    bad = valid_batch()
    bad.profile.rate_hz = math.nan
    assert check(rig, bad.SerializeToString())[1] is grpc.StatusCode.INVALID_ARGUMENT
    good = valid_batch()
    before = rig.store.table_rows()["samples"]
    assert [a.seq for a in check(rig, good.SerializeToString())[0]] == [1]
    assert rig.store.table_rows()["samples"] == before + 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(min_size=1, max_size=8192),
                     st.binary(max_size=512).map(lambda b: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b)))
def test_random_bytes_on_the_grpc_port_leave_the_server_up(rig: Rig, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", rig.server.port), timeout=10) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(4096)  # whatever the server says before it hangs up
        except OSError:
            pass  # a reset is a fine answer to garbage
    assert rig.healthy()
