"""Pipeline stages through the HTTP API: GET /api/v1/stages, the stages of a spike, and
the collector's --stages rules file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_api import LiveServer
from test_spikes_api import T0, WINDOW, fill

from pyrometer.collector.analysis.stages import load_rules
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.procs import python_env
from pyrometer.collector.storage.duckdb.backend import DuckDBStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("stages")
    store = DuckDBStore(folder / "pyrometer.duckdb")
    fill(store)  # 10 requests/s; model_forward 100 -> 300 samples a window at 600 s
    rules = folder / "stages.json"
    rules.write_text(json.dumps({"stages": [{"stage": "rendering", "function": "render_json$"}]}))
    with LiveServer(store, CollectorMetrics(), stage_rules=load_rules(rules)) as server:
        yield server
    store.close()


def test_a_window_split_into_stages_with_time_per_request(api: LiveServer) -> None:
    doc = api.get("/api/v1/stages", service="svc", **{"from": str(T0), "to": str(T0 + 600)}).json()
    by = {s["stage"]: s for s in doc["stages"]}
    assert set(by) == {"forward pass", "rendering"}  # the user's rule named the render
    assert doc["requests"] == 6000 and doc["samples"] == 60 * 110 and doc["period_ms"] == 10.0
    assert by["forward pass"]["ms_per_request"] == pytest.approx(10.0)  # 100 x 10 ms / 100
    assert sum(s["share"] for s in doc["stages"]) == pytest.approx(1.0)
    assert api.get("/api/v1/stages", service="nope").status == 404


def test_a_spike_says_which_stage_grew(api: LiveServer) -> None:
    (spike,) = api.get("/api/v1/spikes", **WINDOW).json()["spikes"]
    stages = {s["stage"]: s for s in spike["stages"]}
    assert stages["forward pass"]["spike_ms_per_request"] == pytest.approx(30.0, rel=0.05)
    assert spike["stages_summary"].startswith("forward pass +20."), spike["stages_summary"]
    assert "rendering flat" in spike["stages_summary"]


def test_a_bad_rules_file_stops_the_collector_before_it_listens(tmp_path: Path) -> None:
    rules = tmp_path / "stages.json"
    rules.write_text('{"stages": [{"stage": "x", "function": "("}]}')
    done = subprocess.run(
        [sys.executable, "-m", "pyrometer.agent.cli", "collector", "--db", str(tmp_path / "db"),
         "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--stages", str(rules)],
        capture_output=True, text=True, timeout=120, env=python_env())
    assert done.returncode == 2, done.stderr
    assert "rule 1: bad regular expression" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "db").exists()
