"""Fuzzing the HTTP API of a real aiohttp server over a real DuckDB file with data in it.

Two drivers: schemathesis generates requests for every operation in the API's own
OpenAPI description (GET /api/v1/openapi.json), and the answers must conform to it and
never be a 5xx; hypothesis then sends plausible-but-wrong values (times, steps,
formats, labels from small vocabularies, so that valid windows with data are hit
too) to every endpoint. Nothing but a storage failure may answer 500.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey
from pyrometer.collector.api.app import RUNNER_OPTIONS, create_app
from pyrometer.collector.api.openapi import openapi_document
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from support.ingest_builder import BASE_NS, StreamEncoder, stack
from support.telemetry_builder import everything

pytestmark = pytest.mark.integration
SCHEMA = schemathesis.openapi.from_dict(openapi_document())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


class Api:
    """The API over a store holding a little of every kind of data, on a free port."""

    def __init__(self, path: Path) -> None:
        self.store = DuckDBStore(path)
        encoder, decoder = StreamEncoder(service="svc"), StreamDecoder()
        now = time.time_ns() - 60 * NANOS_PER_SECOND
        counts = {SampleKey(stack("main", "serve")): 3, SampleKey(stack("main", "x")): 1}
        for seq, start in enumerate((BASE_NS, now), start=1):
            raw = encoder.batch(seq, counts, start_ns=start, telemetry=everything())
            self.store.commit([decoder.decode(raw, time.time_ns())])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(create_app(self.store, CollectorMetrics()), **RUNNER_OPTIONS)
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        self.session = requests.Session()

    async def _start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def close(self) -> None:
        self.session.close()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.store.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    served = Api(tmp_path_factory.mktemp("api") / "api.duckdb")
    yield served
    assert served.session.get(f"{served.url}/healthz", timeout=10).status_code == 200
    served.close()


def test_the_description_is_served_and_names_every_route(api: Api) -> None:
    served = api.session.get(f"{api.url}/api/v1/openapi.json", timeout=10).json()
    assert served == openapi_document()
    app = create_app(api.store, CollectorMetrics())
    routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    # Pyroscope's ingest and query calls are described by Pyroscope's own protocols
    # (proto/push.proto, proto/querier.proto), not by this document
    routes -= {r for r in routes if r == "/ingest" or r.startswith(("/push.v1.", "/querier.v1."))}
    assert routes == set(served["paths"])


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_and_never_answers_5xx(api: Api, case: schemathesis.Case) -> None:
    case.call_and_validate(base_url=api.url, session=api.session, checks=CHECKS, timeout=30)


TIMES = st.one_of(
    st.sampled_from(["now", "now-1h", "now-15m", "now-30d", "now+5m", "now-", "now-0s",
                     "2025-06-15T15:06:40Z", "2025-06-15T16:00:00+02:00", "1750000000",
                     "1750000000.5", "0", "-1", "99999999999999999999", "1e308", "nan",
                     "2200-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "9999-12-31T23:59:59Z",
                     "2025-02-30T00:00:00Z", "", " ", "now-1000000w"]),
    st.text(max_size=30))
DURATIONS = st.one_of(
    st.sampled_from(["1s", "10s", "1ms", "0s", "1ns", "5m", "1h30m", "1w", "1000000w",
                     "0.0001ms", "-5s", "1e9s", "10", "nan", ""]),
    st.text(max_size=12))
WORDS = st.one_of(st.sampled_from(["svc", "nope", "pod-1", "json", "html", "folded", "pprof",
                                   "speedscope", "p95", "p99", "max", "deploy", "x" * 5000, ""]),
                  st.text(max_size=20))
PARAMS = {
    "/api/v1/flamegraph": ["service", "from", "to", "format", "instance", "version", "thread",
                           "pid"],
    "/api/v1/flamegraph/diff": ["service", "from", "to", "baseline_from", "baseline_to",
                                "format", "instance", "pid"],
    "/api/v1/latency": ["service", "from", "to", "step", "route", "version", "instance"],
    "/api/v1/gpu": ["service", "from", "to", "step"],
    "/api/v1/engine": ["service", "from", "to", "step", "instance", "version"],
    "/api/v1/process": ["service", "from", "to", "step"],
    "/api/v1/spikes": ["service", "from", "to", "step", "baseline", "percentile"],
    "/api/v1/events": ["service", "from", "to", "kind"],
    "/api/v1/stages": ["service", "from", "to", "instance", "version", "thread", "pid"],
    "/api/v1/slos": ["service", "at"],
    "/api/v1/cost": ["service", "from", "to"],
    "/api/v1/requests": ["service", "from", "to", "route", "instance", "limit"],
    "/api/v1/services": [],
}
KIND = {"from": TIMES, "to": TIMES, "at": TIMES, "baseline_from": TIMES, "baseline_to": TIMES,
        "step": DURATIONS, "baseline": DURATIONS,
        "pid": st.one_of(st.integers(-(2**70), 2**70).map(str), WORDS),
        "limit": st.one_of(st.integers(-5, 200).map(str), WORDS)}


@st.composite
def requests_to_endpoints(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    path = draw(st.sampled_from(sorted(PARAMS)))
    names = draw(st.lists(st.sampled_from(PARAMS[path] or ["x"]), unique=True))
    params = {name: draw(KIND.get(name, WORDS)) for name in names}
    if "service" in PARAMS[path] and draw(st.booleans()):
        params["service"] = "svc"  # a service with data, so queries run
    return path, params


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=requests_to_endpoints())
def test_plausible_but_wrong_parameters_get_4xx_never_5xx(
    api: Api, request: tuple[str, dict[str, str]],
) -> None:
    path, params = request
    response = api.session.get(f"{api.url}{path}", params=params, timeout=30)
    assert response.status_code in (200, 400, 404), (path, params, response.text[:300])
    if response.status_code != 200:
        assert "error" in response.json()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                 lambda kids: st.lists(kids, max_size=4)
                 | st.dictionaries(st.sampled_from(["service", "kind", "version", "time",
                                                    "attrs", "other"]), kids, max_size=5),
                 max_leaves=12).map(lambda v: __import__("json").dumps(v).encode()),
))
def test_posted_events_get_201_or_400(api: Api, body: bytes) -> None:
    response = api.session.post(f"{api.url}/api/v1/events", data=body, timeout=30,
                                headers={"Content-Type": "application/json"})
    assert response.status_code in (201, 400), (body[:200], response.text[:300])
