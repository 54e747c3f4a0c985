"""GET /api/v1/flamegraph/diff for real: aiohttp on 127.0.0.1 over a DuckDB file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_api import LiveServer, Reply

from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey
from pyrometer.collector.api.params import MAX_LABEL_LEN
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, stack

pytestmark = pytest.mark.integration

S = NANOS_PER_SECOND
T0 = BASE_NS // S
PREDICT = stack("main", "serve", "predict")
RENDER = stack("main", "serve", "render_json")
PREDICT_L = "predict (app.py)"
RENDER_L = "render_json (app.py)"
PATH = "/api/v1/flamegraph/diff"
PARAMETERS = {"service", "from", "to", "baseline_from", "baseline_to", "format", "instance",
              "version", "thread", "pid"}


def fill(store: DuckDBStore) -> None:
    """svc on pod-a: [T0, T0+60s) and [T0+60s, T0+70s) at 10 samples/s, 10% render_json;
    [T0+70s, T0+80s) 50% render_json. pod-b adds render_json samples in [T0+60, T0+70)."""
    a = StreamEncoder(agent_id="a", instance="pod-a", labels={"version": "v1"})
    b = StreamEncoder(agent_id="b", instance="pod-b", labels={"version": "v2"})
    decode_a, decode_b = StreamDecoder(), StreamDecoder()
    steady = {SampleKey(PREDICT, "MainThread"): 90, SampleKey(RENDER, "MainThread"): 10}
    batches = [decode_a.decode(a.batch(i + 1, steady, start_ns=BASE_NS + i * 10 * S), NOW_NS)
               for i in range(7)]
    slow = {SampleKey(PREDICT, "MainThread"): 50, SampleKey(RENDER, "MainThread"): 50}
    batches.append(decode_a.decode(a.batch(8, slow, start_ns=BASE_NS + 70 * S), NOW_NS))
    batches.append(decode_b.decode(
        b.batch(1, {SampleKey(RENDER, "worker"): 100}, start_ns=BASE_NS + 60 * S), NOW_NS))
    store.commit(batches)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    store = DuckDBStore(tmp_path_factory.mktemp("diff-api") / "pyrometer.duckdb")
    fill(store)
    try:
        with LiveServer(store, CollectorMetrics()) as server:
            yield server
    finally:
        store.close()


def diff(api: LiveServer, **params: str) -> Reply:
    return api.get(PATH, **{"service": "svc", **params})


def ok(api: LiveServer, **params: str) -> Any:
    reply = diff(api, **params)
    assert reply.status == 200, reply.body
    assert reply.content_type.startswith("application/json")
    return reply.json()


def window(start: int, end: int, baseline_start: int, baseline_end: int) -> dict[str, str]:
    return {"from": str(T0 + start), "to": str(T0 + end),
            "baseline_from": str(T0 + baseline_start), "baseline_to": str(T0 + baseline_end)}


def children(node: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        [node] = [c for c in node["children"] if c["name"] == name]
    return node


def test_same_rate_over_windows_of_different_length_shows_no_change(api: LiveServer) -> None:
    doc = ok(api, instance="pod-a", **window(60, 70, 0, 60))
    assert doc["normalisation"] == {"per": "second", "baseline": 60.0, "target": 10.0}
    assert (doc["baseline_total"], doc["target_total"]) == (600, 100)
    assert (doc["baseline_from_ns"], doc["to_ns"]) == (BASE_NS, BASE_NS + 70 * S)
    render = children(doc["tree"], "main (app.py)", "serve (app.py)", RENDER_L)
    assert (render["baseline"], render["target"], render["delta"]) == (1.0, 1.0, 0.0)
    assert doc["top_changes"] == []


def test_a_grown_function_leads_the_changes(api: LiveServer) -> None:
    doc = ok(api, **window(70, 80, 0, 60))
    # predict's share fell by what render_json's grew: both lead, ties go by name
    assert [c["function"] for c in doc["top_changes"][:2]] == [PREDICT_L, RENDER_L]
    first = doc["top_changes"][1]
    assert (first["baseline_share"], first["target_share"], first["share_delta"]) == (0.1, 0.5, 0.4)
    assert (first["baseline"], first["target"]) == (1.0, 5.0)
    render = children(doc["tree"], "main (app.py)", "serve (app.py)", RENDER_L)
    assert (render["baseline_samples"], render["target_samples"], render["delta"]) == (60, 50, 4.0)


def test_the_default_baseline_is_the_window_just_before(api: LiveServer) -> None:
    doc = ok(api, **{"from": str(T0 + 70), "to": str(T0 + 80)})
    assert (doc["baseline_from_ns"], doc["baseline_to_ns"]) == (BASE_NS + 60 * S, BASE_NS + 70 * S)
    # one bound given: the other is the target's length away
    doc = ok(api, **{"from": str(T0 + 70), "to": str(T0 + 80), "baseline_to": str(T0 + 30)})
    assert (doc["baseline_from_ns"], doc["baseline_to_ns"]) == (BASE_NS + 20 * S, BASE_NS + 30 * S)
    doc = ok(api, **{"from": str(T0 + 70), "to": str(T0 + 80), "baseline_from": str(T0)})
    assert (doc["baseline_from_ns"], doc["baseline_to_ns"]) == (BASE_NS, BASE_NS + 10 * S)


@pytest.mark.parametrize(("filters", "baseline", "target"), [
    ({}, 600, 200),
    ({"instance": "pod-a"}, 600, 100),
    ({"version": "v2"}, 0, 100),
    ({"thread": "worker"}, 0, 100),
    ({"instance": "pod-b", "thread": "MainThread"}, 0, 0),
])
def test_filters_apply_to_both_windows(api: LiveServer, filters: dict[str, str], baseline: int,
                                       target: int) -> None:
    doc = ok(api, **filters, **window(60, 70, 0, 60))
    assert (doc["baseline_total"], doc["target_total"]) == (baseline, target)


def test_html_is_a_diff_page_about_the_service(api: LiveServer) -> None:
    reply = diff(api, format="html", **window(70, 80, 0, 60))
    assert reply.status == 200 and reply.content_type == "text/html; charset=utf-8"
    page = reply.body.decode()
    assert page.lstrip().lower().startswith("<!doctype html") and "svc" in page
    assert RENDER_L in page and 'id="colour"' in page


@pytest.mark.parametrize("fmt", ["json", "html"])
def test_windows_without_data_are_a_valid_empty_diff(api: LiveServer, fmt: str) -> None:
    reply = diff(api, format=fmt, **window(3600, 3660, 3000, 3060))
    assert reply.status == 200, reply.body
    if fmt == "json":
        doc = reply.json()
        assert (doc["baseline_total"], doc["target_total"], doc["tree"]["children"]) == (0, 0, [])


def test_unknown_service_is_a_404(api: LiveServer) -> None:
    reply = diff(api, service="nope", **window(60, 70, 0, 60))
    assert reply.status == 404
    assert reply.json()["parameter"] == "service" and "nope" in reply.json()["error"]


@pytest.mark.parametrize(("params", "parameter"), [
    ({"service": ""}, "service"),
    ({"service": "s" * (MAX_LABEL_LEN + 1)}, "service"),
    ({"from": "yesterday"}, "from"),
    ({"from": str(T0 + 70), "to": str(T0 + 60)}, "from"),
    ({"baseline_from": "yesterday"}, "baseline_from"),
    ({"baseline_to": "2026-13-45T99:00:00Z"}, "baseline_to"),
    ({"baseline_from": "1900-01-01T00:00:00Z"}, "baseline_from"),
    ({"baseline_from": str(T0 + 10), "baseline_to": str(T0 + 10)}, "baseline_from"),
    ({"baseline_from": str(T0 + 20), "baseline_to": str(T0 + 10)}, "baseline_from"),
    ({"baseline_from": "x" * 300}, "baseline_from"),
    ({"format": "folded"}, "format"),  # a plain flame graph format, not a diff one
    ({"format": "svg"}, "format"),
    ({"pid": "abc"}, "pid"),
    ({"instance": "x" * (MAX_LABEL_LEN + 1)}, "instance"),
])
def test_bad_parameter_is_a_400_naming_it(api: LiveServer, params: dict[str, str],
                                          parameter: str) -> None:
    reply = diff(api, **params)
    assert reply.status == 400, reply.body
    body = reply.json()
    assert body["parameter"] == parameter and body["error"] and len(body["error"]) < 300


@pytest.mark.parametrize("query", [
    "service=svc&baseline_from=%zz",
    "service=%FF%FE&from=0&to=1&baseline_from=0&baseline_to=1",
    "service=svc&baseline_from=now-&baseline_to=now+",
    "service=svc&baseline_from=nan&baseline_to=inf",
    "service=svc&from=1&to=2&baseline_to=0",
    "service=svc&from=7258118399&to=7258118400&baseline_from=7258118399",
    "service=svc&format=%00&baseline_to=%00",
])
def test_garbage_query_strings_never_500(api: LiveServer, query: str) -> None:
    reply = api.raw(f"{PATH}?{query}")
    assert reply.status in (200, 400, 404), reply.body
    if reply.status != 200:
        assert reply.json()["parameter"] in PARAMETERS


def test_queries_are_timed_under_their_own_endpoint(api: LiveServer) -> None:
    ok(api, **window(60, 70, 0, 60))
    body = api.get("/metrics").body.decode()
    assert 'pyrometer_query_seconds_count{endpoint="flamegraph_diff"}' in body
