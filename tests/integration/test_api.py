"""The HTTP API for real: aiohttp on 127.0.0.1 with a free port over a DuckDB file."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey
from pyrometer.collector.api.app import create_app
from pyrometer.collector.api.params import MAX_LABEL_LEN, MAX_PARAM_LEN
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.render.folded import parse_folded, stack_text
from pyrometer.collector.render.registry import FORMATS
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.timeparse import format_time
from pyrometer.proto import profile_pb2
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, stack

pytestmark = pytest.mark.integration

S = NANOS_PER_SECOND
MAIN = stack("main", "serve", "forward")
IDLE = stack("main", "wait")
TOKENIZE = stack("main", "serve", "tokenize")
ODD_SERVICE = 'odd "svc"\r\nname'  # agents may send any text; headers must stay well-formed
LONG_SERVICE = "s" * 1000  # longer than most parameters, but ingest stores it
T0 = BASE_NS // S  # unix seconds of the first window
WINDOW = {"from": str(T0), "to": str(T0 + 60)}
HTTP_TIMEOUT_S = 30
PARAMETERS = {"service", "from", "to", "format", "instance", "version", "thread", "pid"}


def _batch(encoder: StreamEncoder, seq: int, counts: dict[SampleKey, int],
           start_ns: int = BASE_NS) -> DecodedBatch:
    # through the real decoder, so the rows are exactly what ingest would commit
    return StreamDecoder().decode(encoder.batch(seq, counts, start_ns=start_ns), NOW_NS)


def fill(store: DuckDBStore) -> None:
    """svc: 21 samples in windows [T0, T0+10s) and [T0+10s, T0+20s); other services a few."""
    a = StreamEncoder(agent_id="a", instance="pod-a", labels={"version": "v1"}, target_pid=10)
    b = StreamEncoder(agent_id="b", instance="pod-b", labels={"version": "v2"}, target_pid=20)
    c = StreamEncoder(agent_id="c", service="other", instance="pod-c")
    d = StreamEncoder(agent_id="d", service=ODD_SERVICE, instance="pod-d")
    e = StreamEncoder(agent_id="e", service=LONG_SERVICE, instance="pod-e")
    decoder_a = StreamDecoder()  # one stream: its second batch refers to the first's ids
    store.commit([
        decoder_a.decode(a.batch(1, {SampleKey(MAIN, "MainThread"): 5,
                                     SampleKey(IDLE, "io", 11): 2}), NOW_NS),
        decoder_a.decode(a.batch(2, {SampleKey(MAIN, "MainThread"): 4},
                                 start_ns=BASE_NS + 10 * S), NOW_NS),
        _batch(b, 1, {SampleKey(TOKENIZE, "MainThread"): 7, SampleKey(MAIN, "worker"): 3}),
        _batch(c, 1, {SampleKey(MAIN): 1}, start_ns=BASE_NS + 20 * S),
        _batch(d, 1, {SampleKey(IDLE): 6}),
        _batch(e, 1, {SampleKey(IDLE): 8}),
    ])


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class LiveServer:
    """create_app served by aiohttp's AppRunner on 127.0.0.1:<free port>, in a thread.

    The test thread stays synchronous (plain HTTP clients, hypothesis) while the server
    runs its own event loop, as it does in the collector.
    """

    def __init__(self, store: DuckDBStore, metrics: CollectorMetrics, **options: Any) -> None:
        self.app = create_app(store, metrics, **options)
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="api-server", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # handed to the test thread in __enter__
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.port = runner.addresses[0][1]
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(HTTP_TIMEOUT_S) or self._error is not None:
            raise RuntimeError(f"the API server did not start: {self._error!r}")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(HTTP_TIMEOUT_S)
        assert not self._thread.is_alive(), "the API server did not stop"

    def raw(self, path_and_query: str) -> Reply:
        """GET exactly this path and query string, unencoded by the client."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
        try:
            conn.request("GET", path_and_query)
            response = conn.getresponse()
            body = response.read()
            headers = {k.lower(): v for k, v in response.getheaders()}
            return Reply(response.status, headers.get("content-type", ""), headers, body)
        finally:
            conn.close()

    def get(self, path: str, **params: str) -> Reply:
        return self.raw(f"{path}?{urllib.parse.urlencode(params)}" if params else path)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path_factory.mktemp("api") / "pyrometer.duckdb")
    fill(opened)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def metrics() -> CollectorMetrics:
    return CollectorMetrics()


@pytest.fixture(scope="module")
def api(store: DuckDBStore, metrics: CollectorMetrics) -> Iterator[LiveServer]:
    with LiveServer(store, metrics) as server:
        yield server


def flamegraph(api: LiveServer, **params: str) -> Reply:
    return api.get("/api/v1/flamegraph", **{"service": "svc", **WINDOW, **params})


def total(api: LiveServer, **params: str) -> int:
    reply = flamegraph(api, format="json", **params)
    assert reply.status == 200, reply.body
    value = reply.json()["total"]
    assert isinstance(value, int)
    return value


def test_healthz(api: LiveServer) -> None:
    reply = api.get("/healthz")
    assert reply.status == 200 and reply.json() == {"status": "ok"}


def test_services_lists_each_service_with_its_instances_and_extent(api: LiveServer) -> None:
    reply = api.get("/api/v1/services")
    assert reply.status == 200 and reply.content_type.startswith("application/json")
    by_name = {s["name"]: s for s in reply.json()["services"]}
    assert list(by_name) == sorted(["svc", "other", ODD_SERVICE, LONG_SERVICE])
    assert by_name["svc"] == {
        "name": "svc",
        "instances": ["pod-a", "pod-b"],
        "first_seen": format_time(BASE_NS),
        "last_seen": format_time(BASE_NS + 20 * S),
        "first_seen_ns": BASE_NS,
        "last_seen_ns": BASE_NS + 20 * S,
        "samples": 21,
    }
    assert by_name["other"]["instances"] == ["pod-c"] and by_name["other"]["samples"] == 1


def test_json_total_matches_the_store(api: LiveServer, store: DuckDBStore) -> None:
    reply = flamegraph(api, format="json")
    assert reply.status == 200 and reply.content_type == FORMATS["json"].content_type
    doc = reply.json()
    [stored] = [s for s in store.services() if s.name == "svc"]
    assert doc["total"] == stored.samples == 21
    assert doc["service"] == "svc"
    assert (doc["start_ns"], doc["end_ns"]) == (BASE_NS, BASE_NS + 60 * S)
    assert doc["tree"]["value"] == 21


def test_folded_holds_the_stored_stacks(api: LiveServer) -> None:
    reply = flamegraph(api, format="folded")
    assert reply.status == 200 and reply.content_type == FORMATS["folded"].content_type
    assert f"{stack_text(MAIN)} 12" in reply.body.decode().splitlines()
    counts = {";".join(frames): n for frames, n in parse_folded(reply.body.decode())}
    assert counts == {stack_text(MAIN): 12, stack_text(TOKENIZE): 7, stack_text(IDLE): 2}


def test_speedscope_weights_sum_to_the_total(api: LiveServer) -> None:
    reply = flamegraph(api, format="speedscope")
    assert reply.status == 200 and reply.content_type == FORMATS["speedscope"].content_type
    doc = reply.json()
    [profile] = doc["profiles"]
    assert sum(profile["weights"]) == 21
    assert {f["name"] for f in doc["shared"]["frames"]} == {
        "main", "serve", "forward", "tokenize", "wait"}


def test_pprof_is_a_gzipped_profile_of_the_stored_samples(api: LiveServer) -> None:
    reply = flamegraph(api, format="pprof")
    assert reply.status == 200 and reply.content_type == FORMATS["pprof"].content_type
    assert reply.headers["content-disposition"] == 'attachment; filename="svc.pb.gz"'
    profile = profile_pb2.Profile.FromString(gzip.decompress(reply.body))
    strings = list(profile.string_table)
    assert strings[profile.sample_type[0].type] == "samples"
    assert sum(sample.value[0] for sample in profile.sample) == 21
    assert {"main", "serve", "forward", "tokenize", "wait"} <= set(strings)


def test_pprof_filename_of_an_odd_service_name_is_header_safe(api: LiveServer) -> None:
    reply = flamegraph(api, format="pprof", service=ODD_SERVICE)
    assert reply.status == 200
    assert reply.headers["content-disposition"] == 'attachment; filename="odd__svc___name.pb.gz"'


def test_html_is_a_page_about_the_service(api: LiveServer) -> None:
    reply = flamegraph(api, format="html")
    assert reply.status == 200 and reply.content_type == FORMATS["html"].content_type
    page = reply.body.decode()
    assert page.lstrip().lower().startswith("<!doctype html") and "svc" in page


def test_format_defaults_to_json(api: LiveServer) -> None:
    reply = flamegraph(api)
    assert reply.status == 200 and reply.json()["total"] == 21


@pytest.mark.parametrize(("filters", "expected"), [
    ({"instance": "pod-a"}, 11),
    ({"instance": "pod-b"}, 10),
    ({"version": "v2"}, 10),
    ({"thread": "MainThread"}, 16),
    ({"thread": "io"}, 2),
    ({"pid": "10"}, 9),  # the target's own samples carry its pid
    ({"pid": "11"}, 2),
    ({"instance": "pod-a", "thread": "MainThread"}, 9),
    ({"instance": "pod-a", "version": "v2"}, 0),
    ({"instance": "nope"}, 0),
    ({"instance": ""}, 21),  # an empty filter is no filter
])
def test_label_filters_narrow_the_profile(
    api: LiveServer, filters: dict[str, str], expected: int
) -> None:
    assert total(api, **filters) == expected


def test_times_in_every_accepted_form(api: LiveServer) -> None:
    assert total(api, **{"from": format_time(BASE_NS), "to": format_time(BASE_NS + 60 * S)}) == 21
    # only the first window's midpoint lies in [T0, T0+10s)
    assert total(api, **{"from": str(T0), "to": str(T0 + 10)}) == 17
    # the default window is the last hour, long after the test data
    reply = api.get("/api/v1/flamegraph", service="svc", format="json")
    assert reply.status == 200 and reply.json()["total"] == 0
    reply = api.get("/api/v1/flamegraph", service="svc", **{"from": "now-15m", "to": "now"})
    assert reply.status == 200 and reply.json()["total"] == 0


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_window_without_data_is_an_empty_answer(api: LiveServer, fmt: str) -> None:
    reply = flamegraph(api, format=fmt, **{"from": str(T0 + 3600), "to": str(T0 + 7200)})
    assert reply.status == 200 and reply.content_type == FORMATS[fmt].content_type
    if fmt == "json":
        assert reply.json()["total"] == 0


LONG = "x" * (MAX_PARAM_LEN + 1)
LONG_LABEL = "x" * (MAX_LABEL_LEN + 1)


@pytest.mark.parametrize(("params", "parameter"), [
    ({"from": "yesterday"}, "from"),
    ({"to": "2026-13-45T99:00:00Z"}, "to"),
    ({"from": "2025-06-15T12:00:00"}, "from"),  # no time zone
    ({"from": str(T0 + 60), "to": str(T0)}, "from"),  # from after to
    ({"from": str(T0), "to": str(T0)}, "from"),  # an empty window
    ({"from": "9999-01-01T00:00:00Z", "to": "9999-01-02T00:00:00Z"}, "from"),  # past int64 ns
    ({"from": "1900-01-01T00:00:00Z"}, "from"),
    ({"from": "now-100000000w"}, "from"),
    ({"to": "now+100000000w"}, "to"),
    ({"from": "now-" + "9" * 200 + "w"}, "from"),
    ({"format": "svg"}, "format"),
    ({"format": LONG}, "format"),
    ({"service": ""}, "service"),
    ({"service": LONG_LABEL}, "service"),
    ({"pid": "abc"}, "pid"),
    ({"pid": "1.5"}, "pid"),
    ({"pid": "-1"}, "pid"),
    ({"pid": str(2**40)}, "pid"),
    ({"from": "1" * (MAX_PARAM_LEN + 1)}, "from"),
    ({"instance": LONG_LABEL}, "instance"),
    ({"version": LONG_LABEL}, "version"),
    ({"thread": LONG_LABEL}, "thread"),
])
def test_bad_parameter_is_a_400_naming_it(
    api: LiveServer, params: dict[str, str], parameter: str
) -> None:
    reply = flamegraph(api, **params)
    assert reply.status == 400, reply.body
    assert reply.content_type.startswith("application/json")
    body = reply.json()
    assert body["parameter"] == parameter and isinstance(body["error"], str) and body["error"]
    assert len(body["error"]) < 300  # an overlong value is not echoed whole


def test_every_listed_service_can_be_asked_for(api: LiveServer) -> None:
    for listed in api.get("/api/v1/services").json()["services"]:
        assert total(api, service=listed["name"]) == listed["samples"]


def test_missing_service_is_a_400(api: LiveServer) -> None:
    reply = api.get("/api/v1/flamegraph", **WINDOW)
    assert reply.status == 400 and reply.json()["parameter"] == "service"


def test_unknown_service_is_a_404(api: LiveServer) -> None:
    reply = flamegraph(api, service="nope")
    assert reply.status == 404
    assert reply.json()["parameter"] == "service" and "nope" in str(reply.json()["error"])


@pytest.mark.parametrize("query", [
    "service=svc&from=%zz",
    "service=%FF%FE&from=0&to=1",
    "service=svc&pid=%F0%9F%98%80",
    "service=svc&format=%00",
    "service=svc&from=%00&to=%00",
    "&&&===&service",
    "service=svc&service=other&from=1&to=2",
    "service=svc&from=+&to=+",
    "service=svc&from=now-&to=now+",
    "service=svc&from=nan&to=inf",
    "service=svc&from=-0&to=1e308",
    "service=svc&from=now-0.00000000001s",
    "service=svc&thread=%00%01&instance=%E2%80%AE&version=%C0%AF",
])
def test_garbage_query_strings_never_500(api: LiveServer, query: str) -> None:
    reply = api.raw(f"/api/v1/flamegraph?{query}")
    assert reply.status in (200, 400, 404), reply.body
    if reply.status != 200:
        assert reply.json()["parameter"] in PARAMETERS


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=MAX_PARAM_LEN + 20)
_RELATIVE_TIMES = st.builds(
    "now{}{}{}".format, st.sampled_from(["-", "+", " - "]),
    st.integers(0, 10**40) | st.decimals(0, 10**20, places=12).map(str),
    st.sampled_from(["ms", "s", "m", "h", "d", "w"]))
_UNIX_TIMES = (st.integers(-(2**64), 2**64) | st.floats()).map(str)
_RFC3339_TIMES = st.builds(
    "{}{}".format, st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["Z", "+00:00", "+23:59", "-23:59", ""]))
_TIMES = _TEXT | _RELATIVE_TIMES | _UNIX_TIMES | _RFC3339_TIMES


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.none() | _TIMES,
    end=st.none() | _TIMES,
    fmt=st.none() | st.sampled_from(list(FORMATS)) | _TEXT,
    service=st.none() | st.sampled_from(["svc", "other"]) | _TEXT,
    pid=st.none() | st.integers(-(2**70), 2**70).map(str) | _TEXT,
    thread=st.none() | _TEXT,
)
def test_any_parameters_get_an_answer_not_a_500(
    api: LiveServer, start: str | None, end: str | None, fmt: str | None,
    service: str | None, pid: str | None, thread: str | None,
) -> None:
    params = {"from": start, "to": end, "format": fmt, "service": service, "pid": pid,
              "thread": thread}
    reply = api.get("/api/v1/flamegraph", **{k: v for k, v in params.items() if v is not None})
    assert reply.status < 500, reply.body
    if reply.status >= 400:
        assert reply.json()["parameter"] in PARAMETERS


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=_TIMES, end=st.none() | _TIMES)
def test_any_window_of_a_known_service_gets_an_answer_not_a_500(
    api: LiveServer, start: str, end: str | None
) -> None:
    # the service is known, so every window that parses reaches the store
    params = {"service": "svc", "from": start} | ({"to": end} if end is not None else {})
    reply = api.get("/api/v1/flamegraph", **params)
    assert reply.status in (200, 400), reply.body
    if reply.status == 400:
        assert reply.json()["parameter"] in ("from", "to")


def test_metrics_expose_query_latency_after_a_query(api: LiveServer) -> None:
    assert flamegraph(api).status == 200
    reply = api.get("/metrics")
    assert reply.status == 200 and reply.content_type.startswith("text/plain")
    text = reply.body.decode()
    assert 'pyrometer_query_seconds_count{endpoint="flamegraph"}' in text
    assert "# TYPE pyrometer_query_seconds histogram" in text


def test_storage_failure_is_a_json_500_without_details(tmp_path: Path) -> None:
    broken = DuckDBStore(tmp_path / "closed.duckdb")
    broken.close()  # every read now fails inside the store
    with LiveServer(broken, CollectorMetrics()) as server:
        reply = server.get("/api/v1/services")
    assert reply.status == 500
    assert str(tmp_path) not in reply.json()["error"]


def test_rolled_up_minutes_give_the_same_answer_and_say_so(api: LiveServer, store: DuckDBStore
                                                           ) -> None:
    # last in the file: compaction changes where later reads come from, not what they say
    first_minute = BASE_NS // (60 * S) * 60
    window = {"from": str(first_minute - 60), "to": str(first_minute + 7200)}
    before = flamegraph(api, format="folded", **window)
    assert before.headers["pyrometer-resolution"] == "raw"
    assert store.compact(BASE_NS + 7200 * S, max_span_ns=7200 * S).caught_up
    after = flamegraph(api, format="folded", **window)
    assert after.headers["pyrometer-resolution"] in ("1m", "1h")
    assert after.body == before.body and after.headers["pyrometer-samples"] == "21"
