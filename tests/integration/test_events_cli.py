"""A real collector process: `pyrometer event` from CI, and telemetry over gRPC read back
over HTTP (request counts, and a restart that deploys a new version)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pyrometer.agent.shared.model import SampleKey, Telemetry
from pyrometer.collector.procs import Child, python_env, start
from pyrometer.proto import ingest_pb2, ingest_pb2_grpc
from support.ingest_builder import BASE_NS, StreamEncoder, stack
from support.telemetry_builder import S, event, request

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
T0 = BASE_NS // S
RANGE = {"service": "svc", "from": str(T0), "to": str(T0 + 600)}
READY = (r"pyrometer collector: ingest on (?P<grpc>\S+) \(gRPC\), API on (?P<http>http://\S+) "
         r"\(HTTP\), db (?P<db>.+)$")


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    tmp = tmp_path_factory.mktemp("events-cli")
    child = start("collector", CLI + ["collector", "--db", str(tmp / "c.duckdb"), "--grpc-listen",
                                      "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
                  READY, tmp, env=python_env())
    try:
        yield child
    finally:
        assert child.stop(signal.SIGTERM, timeout=30) == 0, child.output()


def api_get(child: Child, path: str, **params: str) -> Any:
    url = f"{child.ready.group('http')}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=60,
                          env=python_env())


def test_event_cli_records_a_deploy(collector: Child) -> None:
    url = collector.ready.group("http")
    done = cli("event", "--url", url, "--service", "cli-svc", "--kind", "deploy",
               "--version", "2.4.1", "--time", str(T0 + 5), "--attr", "commit=abc",
               "--attr", "by=ci=bot")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "recorded deploy of cli-svc version 2.4.1 at 2025-06-15T15:06:45.000Z"]
    [stored] = api_get(collector, "/api/v1/events", **{**RANGE, "service": "cli-svc"})["events"]
    assert (stored["kind"], stored["version"], stored["source"]) == ("deploy", "2.4.1", "api")
    assert stored["attrs"] == {"by": "ci=bot", "commit": "abc"}


def test_event_cli_reports_the_servers_message(collector: Child) -> None:
    url = collector.ready.group("http")
    done = cli("event", "--url", url, "--service", "cli-svc", "--kind", "deploy")
    assert done.returncode == 2 and done.stdout == ""
    assert "400 from" in done.stderr and "version is required" in done.stderr
    bad_attr = cli("event", "--url", url, "--service", "s", "--version", "1", "--attr", "novalue")
    assert bad_attr.returncode == 2 and "KEY=VALUE" in bad_attr.stderr
    unreachable = cli("event", "--url", "http://127.0.0.1:1", "--service", "s", "--version", "1")
    assert unreachable.returncode == 2 and "cannot reach the collector" in unreachable.stderr


async def _ship(target: str, batches: list[ingest_pb2.Batch]) -> list[ingest_pb2.Ack]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = ingest_pb2_grpc.IngestStub(channel).Stream(timeout=30)
        acks = []
        for batch in batches:
            await call.write(batch)
            acks.append(await call.read())
        await call.done_writing()
        return acks


def ship(child: Child, batches: list[ingest_pb2.Batch]) -> list[ingest_pb2.Ack]:
    return asyncio.run(_ship(child.ready.group("grpc"), batches))


def test_counts_and_a_restart_with_a_new_version(collector: Child) -> None:
    main = {SampleKey(stack("main", "serve")): 5}
    before = StreamEncoder(agent_id="run-1", labels={"version": "1.0"})
    sent_v1 = [tuple(request(10 * n + i * 0.1) for i in range(40)) for n in range(3)]
    ship(collector, [before.batch(n + 1, main, start_ns=BASE_NS + 10 * n * S, version="1.0",
                                  telemetry=Telemetry(requests=reqs))
                     for n, reqs in enumerate(sent_v1)])
    # the target restarted with APP_VERSION=2.0; the agent found it, reconnected, and its
    # first batch since carries the deploy event and data under the new version
    after = StreamEncoder(agent_id="run-1", labels={"version": "1.0"})
    deploy = Telemetry(events=(event(30, version="2.0", previous_version="1.0"),),
                       requests=tuple(request(30 + i * 0.1) for i in range(17)))
    first = after.batch(4, main, start_ns=BASE_NS + 30 * S, version="2.0", telemetry=deploy)
    acks = ship(collector, [first])
    # its ack was lost: the agent resends the same batch on a new stream
    resent = StreamEncoder(agent_id="run-1").batch(4, main, start_ns=BASE_NS + 30 * S,
                                                    version="2.0", telemetry=deploy)
    acks += ship(collector, [resent])
    assert [a.duplicate for a in acks] == [False, True]

    points = api_get(collector, "/api/v1/latency", **RANGE, step="10s")["points"]
    assert sum(p["count"] for p in points) == 3 * 40 + 17
    assert [p["count"] for p in points] == [40, 40, 40, 17]
    new = api_get(collector, "/api/v1/latency", **RANGE, step="1m", version="2.0")["points"]
    assert [p["count"] for p in new] == [17]
    deploys = api_get(collector, "/api/v1/events", **RANGE, kind="deploy")["events"]
    assert [(e["version"], e["previous_version"], e["source"]) for e in deploys] == [
        ("2.0", "1.0", "agent")]
    flame = api_get(collector, "/api/v1/flamegraph", **RANGE, version="2.0")
    assert flame["total"] == 5


def test_rejected_records_are_counted_and_the_rest_stored(collector: Child) -> None:
    agent = StreamEncoder(agent_id="bad-records", service="bad")
    records = Telemetry(requests=(request(1), request(2, latency_ms=-3), request(3)))
    [ack] = ship(collector, [agent.batch(1, telemetry=records)])
    assert not ack.duplicate
    points = api_get(collector, "/api/v1/latency", **{**RANGE, "service": "bad"}, step="1m")
    assert [p["count"] for p in points["points"]] == [2]
    metrics = urllib.request.urlopen(f"{collector.ready.group('http')}/metrics", timeout=30).read()
    assert (b'pyrometer_records_rejected_total{kind="request",reason="negative_latency"} 1.0'
            in metrics)
    assert Path(collector.ready.group("db")).name == "c.duckdb"
