"""GET /api/v1/spikes and `pyrometer spikes` for real: aiohttp over a DuckDB file.

Ten minutes of steady traffic, then one minute of requests three times as large: the
answer has one spike, ranked payload first, in the shape the contract names.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_api import LiveServer

from pyrometer.agent import cli
from pyrometer.agent.shared.model import SampleKey, Telemetry
from pyrometer.collector.analysis import gather, report
from pyrometer.collector.analysis.detect import DetectConfig
from pyrometer.collector.analysis.gather import SpikeQuery, _resources, analyze
from pyrometer.collector.analysis.inputs import StackFacts, resource_points
from pyrometer.collector.api.spikes import MAX_BUCKETS
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.reads import SeriesQuery
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, stack
from support.telemetry_builder import S, event, host, process, request

pytestmark = pytest.mark.integration

T0 = BASE_NS // S
SPIKE_AT = 600  # seconds after BASE_NS
WINDOW = {"service": "svc", "from": str(T0 + 300), "to": str(T0 + 700), "baseline": "5m",
          "step": "10s"}
FORWARD = stack("serve", "model_forward")
POST = stack("serve", "postprocess_render_json")


def _window(seq: int, at_s: int, rng: random.Random) -> Telemetry:
    grown = at_s >= SPIKE_AT
    reqs = []
    for i in range(100):  # 10 requests/s over the 10 s window
        size = rng.lognormvariate(6.7, 0.5) * (3 if grown else 1)
        reqs.append(request(at_s + i / 10 + 0.05, latency_ms=5 + size / 50 * rng.uniform(0.9, 1.1),
                            request_bytes=round(size)))
    return Telemetry(requests=tuple(reqs), process=tuple(process(at_s + k) for k in range(10)),
                     host=tuple(host(at_s + k) for k in range(10)),
                     events=(event(at_s + 1, version="v2", previous_version="v1"),)
                     if at_s == 200 else ())


def fill(store: DuckDBStore) -> None:
    agent = StreamEncoder(agent_id="a")
    decoder = StreamDecoder()
    rng = random.Random(5)
    batches = []
    for seq, at_s in enumerate(range(0, SPIKE_AT + 70, 10), 1):
        grown = at_s >= SPIKE_AT
        counts = {SampleKey(FORWARD): 300 if grown else 100, SampleKey(POST): 10}
        batches.append(decoder.decode(agent.batch(
            seq, counts, start_ns=BASE_NS + at_s * S, telemetry=_window(seq, at_s, rng)), NOW_NS))
    store.commit(batches)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    store = DuckDBStore(tmp_path_factory.mktemp("spikes") / "pyrometer.duckdb")
    fill(store)
    with LiveServer(store, CollectorMetrics()) as server:
        yield server
    store.close()


def test_one_payload_spike_in_the_contract_shape(api: LiveServer) -> None:
    reply = api.get("/api/v1/spikes", **WINDOW)
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert {"service", "from", "to", "from_ns", "to_ns", "step", "step_ns", "baseline",
            "baseline_ns", "percentile", "status", "message", "spikes", "notices"} <= set(doc)
    assert (doc["status"], doc["step"], doc["baseline"], doc["percentile"]) == (
        "ok", "10s", "5m", "p99")
    # a short window: the detector read every request, not the sketches
    assert doc["resolution"] == reply.headers["pyrometer-resolution"] == "raw"
    (spike,) = doc["spikes"]
    assert spike["start_ns"] == BASE_NS + SPIKE_AT * S and spike["route"] is None
    assert spike["start_ns"] <= spike["onset_ns"] < spike["start_ns"] + 10 * S
    assert spike["peak_ms"] > 2 * spike["baseline_ms"] and spike["z"] > 4
    causes = spike["causes"]
    assert causes[0]["kind"] == "payload_size" and not spike["unexplained"]
    assert [c["score"] for c in causes] == sorted((c["score"] for c in causes), reverse=True)
    for cause in causes:
        assert {"kind", "score", "z", "explanation", "evidence"} == set(cause)
    slowest = spike["slowest_requests"]
    assert len(slowest) == 5 and all(spike["start_ns"] <= r["end_ns"] < spike["end_ns"]
                                     for r in slowest)
    assert [r["latency_ms"] for r in slowest] == sorted((r["latency_ms"] for r in slowest),
                                                        reverse=True)
    assert {c["kind"] for c in spike["checked"]} == {
        "gpu_throttling", "deploy", "payload_size", "traffic_surge", "code_path",
        "host_pressure", "engine_queueing", "batch_saturation", "kv_cache_pressure",
        "prompt_tokens_shift"}


def test_a_short_recording_with_a_long_baseline_is_insufficient(api: LiveServer) -> None:
    doc = api.get("/api/v1/spikes", **{**WINDOW, "from": str(T0), "to": str(T0 + 200),
                                       "baseline": "1h"}).json()
    assert doc["status"] == "insufficient_data" and doc["spikes"] == []
    assert "baseline" in doc["message"]


@pytest.mark.parametrize(("name", "value"), [
    ("step", "soon"), ("baseline", "10s"), ("percentile", "p42"), ("step", "1ms"),
])
def test_bad_parameters_are_400_naming_them(api: LiveServer, name: str, value: str) -> None:
    reply = api.get("/api/v1/spikes", **{**WINDOW, name: value})
    assert reply.status == 400 and reply.json()["parameter"] == name


def test_a_day_at_the_default_step_and_baseline_is_accepted(api: LiveServer) -> None:
    day = 24 * 3600
    assert -(-(day + 1800) // 10) <= MAX_BUCKETS  # 8,820 buckets
    reply = api.get("/api/v1/spikes", service="svc", **{"from": str(T0 + 700 - day),
                                                        "to": str(T0 + 700)})
    assert reply.status == 200, reply.json()
    assert reply.json()["status"] in ("ok", "insufficient_data")


def test_too_many_buckets_is_400_naming_step(api: LiveServer) -> None:
    reply = api.get("/api/v1/spikes", service="svc", **{"from": str(T0 + 700 - 7 * 86400),
                                                        "to": str(T0 + 700)})
    assert reply.status == 400 and reply.json()["parameter"] == "step"
    assert str(MAX_BUCKETS) in reply.json()["error"]


def test_a_spikes_resources_are_the_whole_series_points_of_its_steps(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "pyrometer.duckdb")
    try:
        fill(store)
        series = SeriesQuery("svc", BASE_NS + 3 * S + 300_000_000, BASE_NS + 655 * S, 7 * S)
        whole = resource_points(store.process(series), store.host(series), 7.0)
        assert whole
        for start, end in [(BASE_NS + 123 * S + 1, BASE_NS + 456 * S + 7), (0, BASE_NS + 20 * S),
                           (BASE_NS + 600 * S, BASE_NS + 900 * S), (series.start_ns, series.end_ns),
                           (BASE_NS + 50 * S, BASE_NS + 51 * S)]:
            expected = tuple(p for p in whole if start <= p.start_ns < end)
            assert _resources(store, series, start, end) == expected
    finally:
        store.close()


def test_the_next_analysis_reuses_what_the_last_found_and_answers_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # each stack's functions and stage outlive an analysis (gather.FACTS): an analysis
    # that finds them known answers exactly as one that finds them out
    store = DuckDBStore(tmp_path / "pyrometer.duckdb")
    facts = StackFacts()
    monkeypatch.setattr(gather, "FACTS", facts)
    try:
        fill(store)
        query = SpikeQuery("svc", BASE_NS + 300 * S, BASE_NS + 700 * S,
                           DetectConfig(step_ns=10 * S, baseline_ns=300 * S))
        first = report.to_json(analyze(store, query))
        kept = len(facts.profiles)
        assert kept > 0 and first["spikes"]
        again = report.to_json(analyze(store, query))
        assert len(facts.profiles) == kept  # every stack was known
        monkeypatch.setattr(gather, "FACTS", StackFacts(max_entries=0))  # forgets each time
        fresh = report.to_json(analyze(store, query))
    finally:
        store.close()
    assert first == again == fresh


def test_a_spike_judged_on_a_sample_keeps_its_answer_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DuckDBStore(tmp_path / "pyrometer.duckdb")
    try:
        fill(store)
        query = SpikeQuery("svc", BASE_NS + 300 * S, BASE_NS + 700 * S,
                           DetectConfig(step_ns=10 * S, baseline_ns=300 * S))
        (whole,) = analyze(store, query).spikes
        monkeypatch.setattr(gather, "REQUEST_BUDGET", 1000)
        answer = analyze(store, query)
        (sampled,) = answer.spikes
    finally:
        store.close()
    assert whole.requests is not None and sampled.requests is not None
    assert not whole.requests.sampled and whole.requests.judged == whole.requests.total > 3000
    assert sampled.requests.sampled and sampled.requests.total == whole.requests.total
    assert 850 <= sampled.requests.judged <= 1150
    # counted over every request: the onset, the slowest, each instance's rise
    assert sampled.spike == whole.spike and sampled.slowest == whole.slowest
    assert sampled.instances == whole.instances
    assert [c.kind for c in sampled.ranking.causes[:1]] == ["payload_size"]
    doc = report.to_json(answer)
    assert doc["spikes"][0]["requests"] == {"judged": sampled.requests.judged,
                                            "total": whole.requests.total, "sampled": True}


def test_a_long_window_is_detected_from_the_latency_sketches(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "pyrometer.duckdb")
    try:
        fill(store)
        store.compact(BASE_NS + (SPIKE_AT + 30) * S)  # the spike's last 40 s stay raw
        with LiveServer(store, CollectorMetrics()) as server:
            short = server.get("/api/v1/spikes", **WINDOW).json()
            reply = server.get("/api/v1/spikes", **{**WINDOW, "from": str(T0 + 700 - 7200)})
            # a window off the 10 s grid (now-2h, say) is moved onto it, to use the sketches
            off = server.get("/api/v1/spikes",
                             **{**WINDOW, "from": str(T0 + 700 - 7200 + 3)}).json()
        assert reply.status == 200, reply.body
        doc = reply.json()
        assert doc["resolution"] == reply.headers["pyrometer-resolution"] == "10s"
        assert "latency sketches" in doc["message"] and short["resolution"] == "raw"
        # the same spike, its causes from the same requests; its size within the sketch's 1%
        (spike,), (exact,) = doc["spikes"], short["spikes"]
        assert (spike["start_ns"], spike["end_ns"], spike["onset_ns"]) == (
            exact["start_ns"], exact["end_ns"], exact["onset_ns"])
        assert abs(spike["peak_ms"] - exact["peak_ms"]) <= 0.01 * exact["peak_ms"]
        assert [c["kind"] for c in spike["causes"]] == [c["kind"] for c in exact["causes"]]
        assert off["resolution"] == "10s" and off["from_ns"] == BASE_NS + (700 - 7200) * S
    finally:
        store.close()


def test_the_cli_prints_a_short_report(api: LiveServer, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    args = ["spikes", "--url", f"http://127.0.0.1:{api.port}", "--service", "svc",
            "--from", WINDOW["from"], "--to", WINDOW["to"], "--baseline", "5m"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "1 spike" in out and "1. payload_size" in out and len(out.splitlines()) < 10
    assert cli.main([*args, "--json"]) == 0
    assert '"payload_size"' in capsys.readouterr().out
