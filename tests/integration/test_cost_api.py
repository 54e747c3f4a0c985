"""GPU cost per version through the API: a release that made requests faster but its
GPUs busier says so; gaps in the readings do not count as GPU time; replayed readings
are labelled."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from test_api import LiveServer

from pyrometer.agent.shared.model import Telemetry
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from support.ingest_builder import BASE_NS, StreamEncoder
from support.telemetry_builder import S, gpu, request

pytestmark = pytest.mark.integration
T0 = BASE_NS // S


def fill(store: DuckDBStore) -> None:
    rng = random.Random(9)
    batches = []
    # 1.0 for 10 minutes at 40% utilization and 50 ms; 2.0 for 10 minutes at 80% and 40 ms,
    # with a 5-minute hole in its readings (the agent away) that must not count
    for version, begin, util, ms in (("1.0", 0, 40, 50.0), ("2.0", 600, 80, 40.0)):
        agent = StreamEncoder(agent_id=f"agent-{version}", labels={"version": version})
        decoder = StreamDecoder()
        for seq, at_s in enumerate(range(begin, begin + 600, 10), 1):
            away = version == "2.0" and 700 <= at_s < 1000
            reqs = tuple(request(at_s + i / 10, latency_ms=ms * rng.uniform(0.95, 1.05))
                         for i in range(100))
            gpus = () if away else tuple(gpu(at_s + k, utilization_gpu_pct=util, replayed=True)
                                         for k in range(10))
            batches.append(decoder.decode(agent.batch(
                seq, {}, start_ns=BASE_NS + at_s * S, telemetry=Telemetry(requests=reqs, gpu=gpus)),
                BASE_NS + 1300 * S))
    store.commit(batches)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    store = DuckDBStore(tmp_path_factory.mktemp("cost") / "pyrometer.duckdb")
    fill(store)
    with LiveServer(store, CollectorMetrics()) as server:
        yield server
    store.close()


def test_a_faster_release_that_costs_more_says_so(api: LiveServer) -> None:
    doc = api.get("/api/v1/cost", service="svc", **{"from": str(T0), "to": str(T0 + 1200)}).json()
    old, new = doc["versions"]
    assert (old["version"], new["version"]) == ("1.0", "2.0")  # in the order they served
    assert old["requests"] == new["requests"] == 6000
    # 1.0: 600 s of readings at 40% = 240 busy GPU-seconds (the first reading has no
    # interval before it); 2.0: 300 s of readings at 80%, its 5-minute hole counted as
    # at most 10 s
    assert old["gpu_busy_seconds"] == pytest.approx(0.4 * 599, abs=1)
    assert new["gpu_busy_seconds"] == pytest.approx(0.8 * (299 + 10), abs=2)
    assert old["gpu_utilization"] == pytest.approx(0.4) and new["gpu_utilization"] == pytest.approx(0.8)
    assert old["gpu_seconds_per_1000_requests"] == pytest.approx(1000 * 0.4 * 599 / 6000, rel=0.01)
    (line,) = doc["comparisons"]
    assert line.startswith("2.0 vs 1.0: p99 -2") and "GPU-seconds per 1000 requests +" in line
    assert doc["replayed"] is True and "replayed" in doc["notice"]


def test_unknown_service_is_404_and_a_quiet_window_is_empty(api: LiveServer) -> None:
    assert api.get("/api/v1/cost", service="nope").status == 404
    quiet = api.get("/api/v1/cost", service="svc", **{"from": str(T0 - 7200), "to": str(T0 - 3600)})
    assert quiet.status == 200 and quiet.json()["versions"] == []
