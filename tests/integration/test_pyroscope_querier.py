"""Pyroscope's query API as Grafana's data source calls it, against a real collector
process holding an agent's data (gRPC) and a Pyroscope SDK's (Push): each supported call
in both Connect encodings, flame graphs equal to /api/v1/flamegraph, and Connect errors
for what is not supported."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from test_pyroscope_ingest import READ, WRITE, call

from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey
from pyrometer.agent.ship import channel as security
from pyrometer.collector.procs import Child, python_env, start
from pyrometer.proto import ingest_pb2_grpc, querier_pb2
from pyrometer.proto import pyroscope_types_pb2 as types_pb2
from support.ingest_builder import StreamEncoder, stack
from support.pprof_builder import pprof, push_request

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
READY = r"ingest on (?P<grpc>\S+) \(gRPC\S*\), API on (?P<http>https?://\S+)"
PREFIX = "/querier.v1.QuerierService/"
SAMPLES, CPU = "process_cpu:samples:count:cpu:nanoseconds", "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
STEP_S = 10
M = TypeVar("M", bound=Message)
# the data: an agent's three 10 s windows and an SDK's one, all on a 10 s grid
T0 = (time.time_ns() // NANOS_PER_SECOND // 60 - 10) * 60 * NANOS_PER_SECOND
AGENT = {SampleKey(stack("main", "serve", "forward"), "MainThread (1)"): 30,
         SampleKey(stack("main", "serve", "tokenize")): 10,
         SampleKey(stack("main", "idle")): 5}
WINDOW_MS = (T0 // 1_000_000, (T0 + 60 * NANOS_PER_SECOND) // 1_000_000)


async def _ship(target: str) -> None:
    encoder = StreamEncoder(service="agent-svc", instance="pod-1", labels={"version": "1.0", "zone": "a"})
    async with security.channel(target, security.Security()) as channel:
        call_ = ingest_pb2_grpc.IngestStub(channel).Stream(
            metadata=security.call_metadata(security.Security(token=WRITE)), timeout=30)
        for seq in (1, 2, 3):
            await call_.write(encoder.batch(seq, AGENT, start_ns=T0 + (seq - 1) * 10 * NANOS_PER_SECOND))
            assert (await call_.read()).seq == seq
        await call_.done_writing()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    tmp = tmp_path_factory.mktemp("pyroscope-querier")
    (tmp / "token").write_text(WRITE)
    child = start("collector", CLI + ["collector", "--db", str(tmp / "c.duckdb"), "--grpc-listen",
                                      "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                      "--token-file", str(tmp / "token")],
                  READY, tmp, env=python_env(PYROMETER_READ_TOKEN=READ))
    try:
        asyncio.run(_ship(child.ready.group("grpc")))
        raw = pprof({("main", "handler"): 7}, time_ns=T0 + 30 * NANOS_PER_SECOND,
                    duration_ns=10 * NANOS_PER_SECOND)
        message = push_request([({"service_name": "sdk-svc", "version": "2.0"}, [raw])])
        status, _, _ = call(child.ready.group("http"), "POST", "/push.v1.PusherService/Push",
                            message.SerializeToString(), {"Content-Type": "application/proto"})
        assert status == 200
        yield child
    finally:
        assert child.stop(signal.SIGTERM, timeout=30) == 0, child.output()


def grafana(child: Child, method: str, request: Message, answer: type[M], encoding: str) -> M:
    """One Connect unary call as Grafana's data source makes it."""
    if encoding == "proto":
        body, kind = request.SerializeToString(), "application/proto"
    else:
        body, kind = json_format.MessageToJson(request).encode(), "application/json"
    status, headers, data = call(child.ready.group("http"), "POST", PREFIX + method, body,
                                 {"Content-Type": kind, "Connect-Protocol-Version": "1"}, token=READ)
    assert status == 200, data
    assert headers["Content-Type"] == kind
    if encoding == "proto":
        return answer.FromString(data)
    return json_format.Parse(data, answer())


ENCODINGS = pytest.mark.parametrize("encoding", ["proto", "json"])


@ENCODINGS
def test_profile_types_labels_and_series(collector: Child, encoding: str) -> None:
    start, end = WINDOW_MS
    types = grafana(collector, "ProfileTypes", querier_pb2.ProfileTypesRequest(start=start, end=end),
                    querier_pb2.ProfileTypesResponse, encoding)
    assert [t.ID for t in types.profile_types] == [SAMPLES, CPU]
    assert types.profile_types[1].sample_type == "cpu" and types.profile_types[1].name == "process_cpu"
    names = grafana(collector, "LabelNames",
                    types_pb2.LabelNamesRequest(matchers=["{}"], start=start, end=end),
                    types_pb2.LabelNamesResponse, encoding)
    assert {"service_name", "instance", "version", "zone", "__name__"} <= set(names.names)
    services = grafana(collector, "LabelValues", types_pb2.LabelValuesRequest(
        name="service_name", matchers=["{}"], start=start, end=end), types_pb2.LabelValuesResponse, encoding)
    assert list(services.names) == ["agent-svc", "sdk-svc"]
    versions = grafana(collector, "LabelValues", types_pb2.LabelValuesRequest(
        name="version", matchers=['{service_name=~"agent.*"}'], start=start, end=end),
        types_pb2.LabelValuesResponse, encoding)
    assert list(versions.names) == ["1.0"]
    # Grafana's label pickers scope their selectors with the profile type
    scoped = grafana(collector, "LabelValues", types_pb2.LabelValuesRequest(
        name="service_name", matchers=[f'{{__profile_type__="{CPU}"}}'], start=start, end=end),
        types_pb2.LabelValuesResponse, encoding)
    assert list(scoped.names) == ["agent-svc", "sdk-svc"]
    listing = grafana(collector, "Series", querier_pb2.SeriesRequest(
        matchers=['{service_name="sdk-svc"}'], label_names=["service_name", "version"], start=start, end=end),
        querier_pb2.SeriesResponse, encoding)
    assert [[(p.name, p.value) for p in s.labels] for s in listing.labels_set] == [
        [("service_name", "sdk-svc"), ("version", "2.0")]]


def _tree(graph: querier_pb2.FlameGraph) -> dict[str, Any]:
    """The flamebearer levels back into a {name, value, children} tree, children by name."""
    nodes: list[list[tuple[int, dict[str, Any]]]] = []
    for depth, level in enumerate(graph.levels):
        row: list[tuple[int, dict[str, Any]]] = []
        x = 0
        values = list(level.values)
        for i in range(0, len(values), 4):
            offset, total, _, name = values[i:i + 4]
            x += offset
            node: dict[str, Any] = {"name": graph.names[name], "value": total, "children": []}
            row.append((x, node))
            if depth:
                parent = next(p for px, p in nodes[depth - 1] if px <= x < px + p["value"])
                parent["children"].append(node)
            x += total
        nodes.append(row)
    return _by_name(nodes[0][0][1])


def _by_name(node: dict[str, Any]) -> dict[str, Any]:
    return {"name": node["name"], "value": node["value"],
            "children": sorted((_by_name(c) for c in node["children"]), key=lambda c: c["name"])}


@ENCODINGS
def test_flame_graph_equals_the_api_flame_graph(collector: Child, encoding: str) -> None:
    start, end = WINDOW_MS
    request = querier_pb2.SelectMergeStacktracesRequest(
        profile_typeID=SAMPLES, label_selector='{service_name="agent-svc"}', start=start, end=end,
        max_nodes=16384)
    graph = grafana(collector, "SelectMergeStacktraces", request,
                    querier_pb2.SelectMergeStacktracesResponse, encoding).flamegraph
    _, _, body = call(collector.ready.group("http"), "GET",
                      f"/api/v1/flamegraph?service=agent-svc&from={start / 1000}&to={end / 1000}",
                      token=READ)
    expected = json.loads(body)
    assert graph.total == expected["total"] == 3 * sum(AGENT.values())
    ours, theirs = _tree(graph), _by_name(expected["tree"])
    assert ours["children"] == theirs["children"]
    assert graph.max_self == 90
    request.profile_typeID = CPU
    in_ns = grafana(collector, "SelectMergeStacktraces", request,
                    querier_pb2.SelectMergeStacktracesResponse, encoding).flamegraph
    assert in_ns.total == graph.total * 10_000_000 and list(in_ns.names) == list(graph.names)
    # a selector matching nothing, and a profile type Pyrometer has not: empty, not an error
    memory = "memory:alloc_space:bytes:space:bytes"
    for type_id, selector in ((SAMPLES, '{service_name="nope"}'), (memory, "{}")):
        request.profile_typeID, request.label_selector = type_id, selector
        empty = grafana(collector, "SelectMergeStacktraces", request,
                        querier_pb2.SelectMergeStacktracesResponse, encoding)
        assert not empty.HasField("flamegraph")


@ENCODINGS
def test_series_by_label(collector: Child, encoding: str) -> None:
    start, end = WINDOW_MS
    request = querier_pb2.SelectSeriesRequest(profile_typeID=SAMPLES, label_selector="{}", start=start,
                                              end=end, group_by=["service_name"], step=STEP_S)
    answer = grafana(collector, "SelectSeries", request, querier_pb2.SelectSeriesResponse, encoding)
    by_service = {s.labels[0].value: [(p.timestamp, p.value) for p in s.points] for s in answer.series}
    per_window = sum(AGENT.values())
    t0_ms = T0 // 1_000_000
    assert by_service == {
        "agent-svc": [(t0_ms + i * STEP_S * 1000, per_window) for i in range(3)],
        "sdk-svc": [(t0_ms + 3 * STEP_S * 1000, 7)],
    }
    request.limit, request.profile_typeID = 1, CPU
    top = grafana(collector, "SelectSeries", request, querier_pb2.SelectSeriesResponse, encoding)
    assert [s.labels[0].value for s in top.series] == ["agent-svc"]
    assert [p.value for p in top.series[0].points] == [per_window * 1e7] * 3


@pytest.mark.parametrize(("method", "body", "status", "code"), [
    ("SelectMergeProfile", b"{}", 501, "unimplemented"),
    ("SelectMergeSpanProfile", b"{}", 501, "unimplemented"),
    ("NoSuchMethod", b"{}", 501, "unimplemented"),
    ("SelectMergeStacktraces", b'{"profileTypeID": "x", "labelSelector": "{}"}', 400, "invalid_argument"),
    ("SelectMergeStacktraces", json.dumps({"profileTypeID": SAMPLES, "labelSelector": "{a=b}"}).encode(),
     400, "invalid_argument"),
    ("SelectSeries", json.dumps({"profileTypeID": SAMPLES, "step": 0}).encode(), 400, "invalid_argument"),
    ("LabelValues", b"{not json", 400, "invalid_argument"),
    ("LabelNames", json.dumps({"start": "5", "end": "1"}).encode(), 400, "invalid_argument"),
])
def test_unsupported_and_bad_calls_are_connect_errors(collector: Child, method: str, body: bytes,
                                                      status: int, code: str) -> None:
    got, headers, data = call(collector.ready.group("http"), "POST", PREFIX + method, body,
                              {"Content-Type": "application/json"}, token=READ)
    assert (got, headers["Content-Type"].split(";")[0]) == (status, "application/json")
    answer = json.loads(data)
    assert answer["code"] == code and answer["message"]


def test_reads_take_the_read_token_and_nothing_without_one(collector: Child) -> None:
    base = collector.ready.group("http")
    headers = {"Content-Type": "application/json"}
    assert call(base, "POST", PREFIX + "ProfileTypes", b"{}", headers, token=READ)[0] == 200
    assert call(base, "POST", PREFIX + "ProfileTypes", b"{}", headers, token=None)[0] == 401
    assert call(base, "POST", PREFIX + "ProfileTypes", b"{}", {"Content-Type": "text/plain"},
                token=READ)[0] == 400
