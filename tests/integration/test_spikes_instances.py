"""A fault on one instance of two: the spike names that instance and its cause is judged
on that instance's data, through a real DuckDB file and the HTTP API."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from test_api import LiveServer

from pyrometer.agent.shared.model import SampleKey, Telemetry
from pyrometer.collector.analysis.text import to_text
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, stack
from support.telemetry_builder import S, host, process, request

pytestmark = pytest.mark.integration

T0 = BASE_NS // S
SPIKE_AT = 600
WINDOW = {"service": "svc", "from": str(T0 + 300), "to": str(T0 + 700), "baseline": "5m",
          "step": "10s", "percentile": "p95"}
FORWARD = stack("serve", "model_forward")
POST = stack("serve", "postprocess_render_json")


def _telemetry(at_s: int, slow: bool, rng: random.Random) -> Telemetry:
    reqs = tuple(request(at_s + i / 10 + 0.05,
                         latency_ms=(30 if slow else 10) * rng.uniform(0.9, 1.1))
                 for i in range(100))
    return Telemetry(requests=reqs, process=tuple(process(at_s + k) for k in range(10)),
                     host=tuple(host(at_s + k) for k in range(10)))


def fill(store: DuckDBStore, broken: tuple[str, ...]) -> None:
    rng = random.Random(11)
    batches = []
    for name in ("pod-a", "pod-b"):
        decoder = StreamDecoder()  # one per stream, as the ingest server keeps them
        agent = StreamEncoder(agent_id=f"agent-{name}", instance=name, host=f"host-{name}")
        for seq, at_s in enumerate(range(0, SPIKE_AT + 70, 10), 1):
            slow = name in broken and at_s >= SPIKE_AT
            counts = {SampleKey(FORWARD): 100, SampleKey(POST): 200 if slow else 10}
            batches.append(decoder.decode(agent.batch(
                seq, counts, start_ns=BASE_NS + at_s * S,
                telemetry=_telemetry(at_s, slow, rng)), NOW_NS))
    store.commit(batches)


@pytest.fixture(scope="module", params=[("pod-b",), ("pod-a", "pod-b")], ids=["one", "both"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[LiveServer, tuple[str, ...]]]:
    store = DuckDBStore(tmp_path_factory.mktemp("instances") / "pyrometer.duckdb")
    fill(store, request.param)
    with LiveServer(store, CollectorMetrics()) as server:
        yield server, request.param
    store.close()


def test_the_spike_names_the_instance_that_carries_it(api: tuple[LiveServer, tuple[str, ...]]
                                                      ) -> None:
    server, broken = api
    reply = server.get("/api/v1/spikes", **WINDOW)
    assert reply.status == 200, reply.body
    doc = reply.json()
    (spike,) = doc["spikes"]
    assert spike["causes"][0]["kind"] == "code_path", spike["causes"]
    rises = {r["instance"]: r for r in spike["instances"]}
    assert set(rises) == {"pod-a", "pod-b"}
    assert rises["pod-b"]["ratio"] > 2.5 and rises["pod-b"]["spike_requests"] >= 20
    if broken == ("pod-b",):
        assert spike["instance"] == "pod-b" and rises["pod-a"]["ratio"] < 1.3
        assert "spike on instance pod-b " in to_text(doc)
        # judged on pod-b's stacks alone: postprocess went from 10 to 200 of 310 samples
        # there, where the fleet's profile would dilute it with pod-a's 10 of 110
        evidence = spike["causes"][0]["evidence"]
        assert "postprocess_render_json" in spike["causes"][0]["explanation"], evidence
    else:
        assert spike["instance"] is None and "on instance" not in to_text(doc)
