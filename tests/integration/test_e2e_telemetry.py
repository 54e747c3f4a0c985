"""End to end for telemetry: the demo model server with the WSGI middleware, the agent
following it by --match across a redeploy, GPU readings replayed from the recording.

Checks, over real processes: request counts at the collector equal requests sent; a
restart with a new APP_VERSION gives exactly one deploy event and the new samples carry
the new version; replayed GPU data says it is replayed; process readings arrive; the
W3C trace ids the requests came with reach the API, linked by --trace-url.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrometer.collector.demo import free_udp_port
from pyrometer.collector.procs import Child, python_env, start

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo"
RECORDING = DEMO / "gpu-thermal-episode.jsonl"
DEADLINE_S = 90.0
TRACE_URL = "https://tempo.example/trace/{trace_id}"


def _get(api: str, path: str, **params: str) -> Any:
    url = f"{api}{path}?{urllib.parse.urlencode({'service': 'tele', **params})}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _wait(what: str, check: Callable[[], Any]) -> Any:
    """Poll a condition on the collector's API until it holds: readiness, not a sleep."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _trace_id(i: int) -> str:
    return f"{i + 1:032x}"


def _predict(url: str, n: int, traced: bool = False) -> None:
    for i in range(n):
        body = json.dumps({"text": f"request number {i} " * 4}).encode()
        headers = {"Content-Type": "application/json"}
        if traced:  # W3C trace context, as an instrumented client sends it
            headers["traceparent"] = f"00-{_trace_id(i)}-{i + 1:016x}-01"
        request = urllib.request.Request(f"{url}/v1/predict", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200


def _requests_seen(api: str, **filters: str) -> int:
    latency = _get(api, "/api/v1/latency", **{"from": "now-10m", "to": "now+1m", "step": "10s",
                                              **filters})
    return sum(point["count"] for point in latency["points"])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("tele")
    seed = str(random.randrange(10**6, 10**7))  # makes --match unique to this test's server
    addr = f"127.0.0.1:{free_udp_port()}"
    children: list[Child] = []

    def server(version: str) -> Child:
        child = start(f"server-{version}", [sys.executable, str(DEMO / "model_server.py"),
                                            "--port", "0", "--seed", seed],
                      r"listening on (?P<url>http://\S+)", tmp,
                      env=python_env(APP_VERSION=version, PYROMETER_REQUESTS_ADDR=addr))
        children.append(child)
        return child

    try:
        collector = start("collector", CLI + ["collector", "--db", str(tmp / "t.duckdb"),
                                              "--grpc-listen", "127.0.0.1:0",
                                              "--http-listen", "127.0.0.1:0",
                                              "--trace-url", TRACE_URL],
                          r"ingest on (?P<grpc>\S+) .*API on (?P<http>http://\S+)", tmp,
                          env=python_env())
        children.append(collector)
        api = collector.ready.group("http")
        first = server("1.0")
        agent = start("agent", CLI + ["agent", "--collector", collector.ready.group("grpc"),
                                      "--service", "tele", "--match", rf"model_server\.py .*{seed}",
                                      "--window", "2", "--requests-listen", addr,
                                      "--gpu", f"replay:{RECORDING}", "--gpu-interval", "0.5"],
                      "profiling pid", tmp, env=python_env())
        children.append(agent)
        _predict(first.ready.group("url"), 20)
        _wait("20 requests", lambda: _requests_seen(api) == 20)
        assert first.stop() == 0
        second = server("2.0")
        _wait("the deploy event", lambda: [e for e in _get(api, "/api/v1/events", **{
            "from": "now-10m", "to": "now+1m"})["events"] if e["kind"] == "deploy"])
        _predict(second.ready.group("url"), 10, traced=True)
        _wait("10 more requests", lambda: _requests_seen(api) == 30)
        _wait("samples of 2.0", lambda: _get(api, "/api/v1/flamegraph", version="2.0", **{
            "from": "now-10m", "to": "now+1m"})["total"] > 0)
        assert agent.stop(signal.SIGTERM, timeout=30) == 0, agent.output()
        window = {"from": "now-10m", "to": "now+1m"}
        yield {
            "api": api,
            "events": _get(api, "/api/v1/events", **window)["events"],
            "gpu": _get(api, "/api/v1/gpu", step="1s", **window),
            "process": _get(api, "/api/v1/process", step="1s", **window),
            "pids": (first.pid, second.pid),
            "by_version": {v: _requests_seen(api, version=v) for v in ("1.0", "2.0")},
            "agent_log": agent.output(),
            "slowest": _get(api, "/api/v1/requests", limit="100", **window)["requests"],
        }
    finally:
        for child in reversed(children):
            child.stop(signal.SIGKILL)


def test_request_counts_equal_requests_sent_per_version(run: dict[str, Any]) -> None:
    assert run["by_version"] == {"1.0": 20, "2.0": 10}


def test_a_redeploy_gives_one_restart_and_one_deploy_event(run: dict[str, Any]) -> None:
    kinds = sorted(e["kind"] for e in run["events"])
    assert kinds == ["deploy", "restart"], run["events"]
    deploy = next(e for e in run["events"] if e["kind"] == "deploy")
    assert (deploy["previous_version"], deploy["version"]) == ("1.0", "2.0")
    assert (deploy["previous_pid"], deploy["pid"]) == run["pids"]


def test_replayed_gpu_data_says_so(run: dict[str, Any]) -> None:
    gpu = run["gpu"]
    assert gpu["replayed"] is True and "replayed" in gpu["notice"].lower()
    points = [p for g in gpu["gpus"] for p in g["points"]]
    assert points and all(p["replayed"] for p in points)
    assert all(p["sm_clock_max_mhz"] == 1980 for p in points if p["sm_clock_max_mhz"])


def test_process_readings_cover_both_servers(run: dict[str, Any]) -> None:
    pids = {p["pid"] for p in run["process"]["processes"] if p["points"]}
    assert set(run["pids"]) <= pids
    assert run["process"]["hosts"] and run["process"]["hosts"][0]["points"]


def test_trace_ids_reach_the_api_with_links(run: dict[str, Any]) -> None:
    slowest = run["slowest"]
    assert len(slowest) == 30  # every request; the first ten came without a traceparent
    traced = {r["trace_id"]: r for r in slowest if r["trace_id"]}
    assert set(traced) == {_trace_id(i) for i in range(10)}
    assert all(r["version"] == "2.0" for r in traced.values())
    some = traced[_trace_id(3)]
    assert some["trace_url"] == TRACE_URL.replace("{trace_id}", _trace_id(3))
    latencies = [r["latency_ms"] for r in slowest]
    assert latencies == sorted(latencies, reverse=True)
