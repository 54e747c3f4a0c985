"""Latency objectives through the API on a real DuckDB file: an SLO burn that pages and
then resolves, evaluated at moments along a recorded 7-hour history (compressed time:
the `at` parameter moves the clock, the data are fixed)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_api import LiveServer

from pyrometer.agent.shared.model import Telemetry
from pyrometer.collector.analysis.slo import Objective
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.procs import python_env
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from support.ingest_builder import BASE_NS, StreamEncoder
from support.telemetry_builder import S, request

pytestmark = pytest.mark.integration

T0 = BASE_NS // S
BURST = (6 * 3600, 6 * 3600 + 900)  # fifteen minutes of slow requests, six hours in
OBJECTIVES = (Objective("predict", "svc", 0.99, 300.0, route="/v1/predict"),
              Objective("other-service", "other", 0.9, 100.0))


def fill(store: DuckDBStore) -> None:
    rng = random.Random(3)
    agent, decoder = StreamEncoder(agent_id="a"), StreamDecoder()
    batches = []
    for seq, at_s in enumerate(range(0, 7 * 3600, 60), 1):  # 1 request/s in 1-minute batches
        slow = BURST[0] <= at_s < BURST[1]
        reqs = tuple(request(at_s + i + 0.5, latency_ms=(500 if slow else 80)
                             * rng.uniform(0.9, 1.1)) for i in range(60))
        batches.append(decoder.decode(agent.batch(
            seq, {}, start_ns=BASE_NS + at_s * S, telemetry=Telemetry(requests=reqs)),
            BASE_NS + 8 * 3600 * S))  # the clock of a collector that received them live
    store.commit(batches)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    store = DuckDBStore(tmp_path_factory.mktemp("slos") / "pyrometer.duckdb")
    fill(store)
    with LiveServer(store, CollectorMetrics(), objectives=OBJECTIVES) as server:
        yield server
    store.close()


def state_at(api: LiveServer, at_s: int) -> dict[str, object]:
    reply = api.get("/api/v1/slos", service="svc", at=str(T0 + at_s))
    assert reply.status == 200, reply.body
    (slo,) = reply.json()["slos"]
    return slo  # type: ignore[no-any-return]


def test_a_burn_pages_while_it_lasts_and_resolves_after(api: LiveServer) -> None:
    before = state_at(api, BURST[0] - 60)
    assert before["state"] == "ok" and before["bad_requests"] == 0
    assert before["budget_left"] == 1.0
    early = state_at(api, BURST[0] + 300)  # five minutes in: 5% of the hour, burn 8.3
    assert early["state"] == "ok", early
    during = state_at(api, BURST[0] + 720)  # twelve minutes in: 20% of the hour
    assert during["state"] == "page", during
    burns = {b["window"]: b["burn_rate"] for b in during["burn_rates"]}  # type: ignore[attr-defined]
    assert burns["5m"] == pytest.approx(100) and burns["1h"] == pytest.approx(20)
    after = state_at(api, BURST[1] + 6 * 60)  # the last 5 minutes calm: the page stops
    assert after["state"] == "ok", after
    # 900 slow requests of the period's 24,900 (6 h 55 min at one a second), whose budget
    # is 249: overspent more than three times over
    later = state_at(api, BURST[1] + 40 * 60)
    assert later["state"] == "ok" and later["bad_requests"] == 900, later
    assert later["requests"] == 24_900
    assert later["budget_left"] == pytest.approx(1 - 900 / 249, abs=0.001)


def test_objectives_are_listed_per_service_and_a_bad_time_is_400(api: LiveServer) -> None:
    every = api.get("/api/v1/slos", at=str(T0 + 3600)).json()["slos"]
    assert [s["name"] for s in every] == ["predict", "other-service"]
    assert every[1]["requests"] == 0 and every[1]["budget_left"] is None
    reply = api.get("/api/v1/slos", at="yesterday-ish")
    assert reply.status == 400 and reply.json()["parameter"] == "at"


def test_a_bad_objectives_file_stops_the_collector(tmp_path: Path) -> None:
    path = tmp_path / "slos.json"
    path.write_text(json.dumps({"slos": [{"name": "a", "service": "m", "objective": 2,
                                          "threshold_ms": 300}]}))
    done = subprocess.run(
        [sys.executable, "-m", "pyrometer.agent.cli", "collector", "--db", str(tmp_path / "db"),
         "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--slos", str(path)],
        capture_output=True, text=True, timeout=120, env=python_env())
    assert done.returncode == 2 and "entry 1: objective 2" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
