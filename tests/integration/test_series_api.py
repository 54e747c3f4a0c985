"""The series and events endpoints for real: aiohttp on 127.0.0.1 over a DuckDB file."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_api import _TEXT, _TIMES, HTTP_TIMEOUT_S, LiveServer, Reply

from pyrometer.agent.shared.model import Telemetry
from pyrometer.collector.api.series import MAX_BUCKETS, default_step
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.reads import REPLAYED_NOTICE
from pyrometer.collector.timeparse import format_duration, parse_duration
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder
from support.telemetry_builder import S, engine_reading, event, gpu, host, process, request

pytestmark = pytest.mark.integration

T0 = BASE_NS // S
WINDOW = {"service": "svc", "from": str(T0), "to": str(T0 + 60), "step": "10s"}
SERIES = ("/api/v1/latency", "/api/v1/gpu", "/api/v1/process", "/api/v1/engine")
PARAMETERS = {"service", "from", "to", "step", "instance", "version", "route", "kind"}
REQUESTS = 25


# two 5 s scrapes in the first 10 s step, one in the second (vLLM), and TGI's input
# length, a histogram where vLLM counts: each kind of engine series
ENGINE = (
    engine_reading(1, "requests_waiting", value=2.0, count=0),
    engine_reading(6, "requests_waiting", value=4.0, count=0),
    engine_reading(1, "requests", value=10.0, count=0),
    engine_reading(6, "requests", value=20.0, count=0),
    engine_reading(1, "queue_time_s", value=0.4, count=2),
    engine_reading(6, "queue_time_s", value=0.2, count=2),
    engine_reading(11, "queue_time_s", value=0.0, count=0),  # no request queued in that scrape
    engine_reading(1, "prompt_tokens", value=3000.0, count=10, engine="tgi", model="m"),
)


def fill(store: DuckDBStore) -> None:
    live = StreamEncoder(agent_id="a", instance="pod-a")
    replay = StreamEncoder(agent_id="b", service="replayed", instance="pod-b")
    store.commit([
        StreamDecoder().decode(live.batch(1, telemetry=Telemetry(
            requests=tuple(request(i, latency_ms=10 + i) for i in range(REQUESTS)),
            gpu=(gpu(1), gpu(2, clock_event_reasons=0x4)), process=(process(1),),
            host=(host(1),), events=(event(3, kind="restart"),), engine=ENGINE,
        ), version="v1"), NOW_NS),
        StreamDecoder().decode(replay.batch(1, telemetry=Telemetry(
            gpu=(gpu(1, replayed=True),))), NOW_NS),
    ])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    store = DuckDBStore(tmp_path_factory.mktemp("series") / "pyrometer.duckdb")
    fill(store)
    with LiveServer(store, CollectorMetrics()) as server:
        yield server
    store.close()


def post(api: LiveServer, path: str, body: Any, raw: bytes | None = None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.request("POST", path, body=raw if raw is not None else json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return Reply(response.status, response.getheader("content-type", ""), {}, response.read())
    finally:
        conn.close()


def test_latency_counts_equal_the_requests_stored(api: LiveServer) -> None:
    reply = api.get("/api/v1/latency", **WINDOW)
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert (doc["step"], doc["step_ns"], doc["from_ns"]) == ("10s", 10 * S, BASE_NS)
    assert [p["count"] for p in doc["points"]] == [10, 10, 5]
    assert sum(p["count"] for p in doc["points"]) == REQUESTS
    first = doc["points"][0]
    assert first["time"] == "2025-06-15T15:06:40.000Z" and first["rate_per_s"] == 1.0
    assert (first["latency_p50_ms"], first["latency_max_ms"]) == (14.5, 19.0)
    assert first["ttfb_p50_ms"] is None and first["response_bytes_p95"] == 5000
    assert api.get("/api/v1/latency", **WINDOW, version="v2").json()["points"] == []
    routed = api.get("/api/v1/latency", **WINDOW, route="/v1/predict").json()
    assert routed["filters"]["route"] == "/v1/predict" and len(routed["points"]) == 3


def test_gpu_says_when_data_was_replayed(api: LiveServer) -> None:
    live = api.get("/api/v1/gpu", **WINDOW).json()
    assert live["replayed"] is False and "notice" not in live
    [one] = live["gpus"]
    assert (one["instance"], one["gpu_index"], one["name"]) == ("pod-a", 0, "NVIDIA H100")
    [point] = one["points"]
    assert point["readings"] == 2 and point["throttle"]["sw_power_cap"] == 0.5
    assert point["temperature_c"] == 71.5 and point["replayed"] is False
    replayed = api.get("/api/v1/gpu", **{**WINDOW, "service": "replayed"}).json()
    assert replayed["replayed"] is True and replayed["notice"] == REPLAYED_NOTICE
    assert replayed["gpus"][0]["points"][0]["replayed"] is True


def test_engine_series_give_each_kind_its_value(api: LiveServer) -> None:
    answer = api.get("/api/v1/engine", **WINDOW).json()
    series = {(s["engine"], s["metric"]): s for s in answer["series"]}
    assert set(series) == {("vllm", "requests_waiting"), ("vllm", "requests"),
                           ("vllm", "queue_time_s"), ("tgi", "prompt_tokens")}
    waiting = series["vllm", "requests_waiting"]
    assert (waiting["kind"], waiting["unit"], waiting["instance"], waiting["model"]) == (
        "gauge", "requests", "pod-a", "llama")
    assert [(p["value"], p["max"], p["readings"]) for p in waiting["points"]] == [(3.0, 4.0, 2)]
    requests = series["vllm", "requests"]  # 30 more requests over two 5 s scrapes: 3 a second
    assert (requests["kind"], requests["unit"]) == ("delta", "requests/s")
    assert [(p["value"], p["total"]) for p in requests["points"]] == [(3.0, 30.0)]
    queue = series["vllm", "queue_time_s"]  # 0.6 s over 4 requests; none in the next step
    assert (queue["kind"], queue["unit"]) == ("mean", "seconds")
    assert [(p["value"], p["observations"]) for p in queue["points"]] == [
        (pytest.approx(0.15), 4), (None, 0)]
    assert [p["start_ns"] for p in queue["points"]] == [BASE_NS, BASE_NS + 10 * S]
    tokens = series["tgi", "prompt_tokens"]  # a histogram: tokens per request, not per second
    assert (tokens["kind"], tokens["unit"], tokens["points"][0]["value"]) == (
        "mean", "tokens/request", 300.0)
    other = api.get("/api/v1/engine", **{**WINDOW, "version": "v2"}).json()
    assert other["series"] == []


def test_process_holds_processes_and_hosts(api: LiveServer) -> None:
    doc = api.get("/api/v1/process", **WINDOW).json()
    [proc] = doc["processes"]
    assert (proc["instance"], proc["pid"], proc["points"][0]["cpu_user"]) == ("pod-a", 100, 0.75)
    [machine] = doc["hosts"]
    assert machine["instance"] == "pod-a" and machine["points"][0]["host"] == "host-1"
    assert machine["points"][0]["psi_cpu_some"] == 1.5


def test_default_step_keeps_the_bucket_bound(api: LiveServer) -> None:
    doc = api.get("/api/v1/latency", service="svc", **{"from": str(T0), "to": str(T0 + 3600)}).json()
    assert doc["step"] == "5s" and sum(p["count"] for p in doc["points"]) == REQUESTS
    for span in (1, 999, 1000 * S, 3600 * S, 86400 * S, 10**18):
        step = default_step(span)
        assert -(-span // step) <= MAX_BUCKETS
        assert parse_duration(format_duration(step)) == step


def test_events_post_then_list(api: LiveServer) -> None:
    body = {"service": "svc", "kind": "deploy", "version": "v2", "time": T0 + 30,
            "attrs": {"commit": "abc123"}}
    reply = post(api, "/api/v1/events", body)
    assert reply.status == 201, reply.body
    stored = reply.json()
    assert stored["source"] == "api" and stored["agent_id"] == "api"
    assert (stored["time_ns"], stored["version"], stored["attrs"]) == (
        BASE_NS + 30 * S, "v2", {"commit": "abc123"})
    listing = api.get("/api/v1/events", **{k: v for k, v in WINDOW.items() if k != "step"}).json()
    assert [(e["kind"], e["source"]) for e in listing["events"]] == [
        ("restart", "agent"), ("deploy", "api")]
    assert listing["events"][1] == stored and listing["truncated"] is False
    now = post(api, "/api/v1/events", {"service": "other", "kind": "config"})
    assert now.status == 201 and now.json()["version"] == ""


@pytest.mark.parametrize(("body", "field"), [
    ([], "body"),
    ({"kind": "deploy", "version": "v"}, "service"),
    ({"service": "", "kind": "deploy", "version": "v"}, "service"),
    ({"service": 5, "kind": "deploy", "version": "v"}, "service"),
    ({"service": "s" * 5000, "kind": "deploy", "version": "v"}, "service"),
    ({"service": "svc", "version": "v"}, "kind"),
    ({"service": "svc", "kind": "Deploy!", "version": "v"}, "kind"),
    ({"service": "svc", "kind": "deploy"}, "version"),
    ({"service": "svc", "kind": "deploy", "version": None}, "version"),
    ({"service": "svc", "kind": "deploy", "version": "v", "time": "yesterday"}, "time"),
    ({"service": "svc", "kind": "deploy", "version": "v", "time": True}, "time"),
    ({"service": "svc", "kind": "deploy", "version": "v", "time": 1e300}, "time"),
    ({"service": "svc", "kind": "deploy", "version": "v", "time": 5}, "time"),
    ({"service": "svc", "kind": "deploy", "version": "v", "time": 10**400}, "time"),
    ({"service": "svc", "kind": "deploy", "version": "v", "time": "now+2h"}, "time"),
    ({"service": "svc", "kind": "deploy", "version": "v", "attrs": ["a"]}, "attrs"),
    ({"service": "svc", "kind": "deploy", "version": "v", "attrs": {"a": 1}}, "attrs"),
    ({"service": "svc", "kind": "deploy", "version": "v", "attrs": {"": "x"}}, "attrs"),
    ({"service": "svc", "kind": "deploy", "verison": "v"}, "verison"),
])
def test_bad_event_is_a_400_naming_the_field(api: LiveServer, body: Any, field: str) -> None:
    reply = post(api, "/api/v1/events", body)
    assert reply.status == 400, reply.body
    assert reply.json()["parameter"] == field and reply.json()["error"]


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[" * 100_000, b"1" * 70_000])
def test_unreadable_event_body_is_a_400(api: LiveServer, raw: bytes) -> None:
    reply = post(api, "/api/v1/events", None, raw=raw)
    assert reply.status == 400 and reply.json()["parameter"] == "body"


@pytest.mark.parametrize("path", SERIES)
@pytest.mark.parametrize(("params", "parameter"), [
    ({"step": "abc"}, "step"),
    ({"step": "0s"}, "step"),
    ({"step": "10us"}, "step"),
    ({"step": "100000000000w"}, "step"),
    ({"step": "1ms"}, "step"),  # 60 000 buckets over a minute
    ({"step": "1s", "from": "now-1d", "to": "now"}, "step"),
    ({"service": ""}, "service"),
    ({"from": "later"}, "from"),
    ({"instance": "x" * 5000}, "instance"),
])
def test_bad_series_parameter_is_a_400_naming_it(
    api: LiveServer, path: str, params: dict[str, str], parameter: str
) -> None:
    reply = api.get(path, **{**WINDOW, **params})
    assert reply.status == 400, reply.body
    assert reply.json()["parameter"] == parameter and len(reply.json()["error"]) < 300


def test_too_many_buckets_says_which_step_would_do(api: LiveServer) -> None:
    reply = api.get("/api/v1/latency", **{**WINDOW, "step": "1ms"})
    assert "use a step of 60ms or more" in reply.json()["error"]


_STEPS = st.none() | _TEXT | st.builds("{}{}".format, st.integers(0, 10**30),
                                       st.sampled_from(["ms", "s", "m", "h", "d", "w"]))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from([*SERIES, "/api/v1/events"]), start=st.none() | _TIMES,
       end=st.none() | _TIMES, step=_STEPS,
       service=st.none() | st.sampled_from(["svc", "replayed"]) | _TEXT,
       label=st.none() | _TEXT, name=st.sampled_from(["instance", "version", "route", "kind"]))
def test_any_parameters_get_an_answer_not_a_500(
    api: LiveServer, path: str, start: str | None, end: str | None, step: str | None,
    service: str | None, label: str | None, name: str,
) -> None:
    params = {"from": start, "to": end, "step": step, "service": service, name: label}
    reply = api.get(path, **{k: v for k, v in params.items() if v is not None})
    assert reply.status < 500, reply.body
    if reply.status >= 400:
        assert reply.json()["parameter"] in PARAMETERS
