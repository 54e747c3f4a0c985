"""The scrape path over real HTTP: a server on 127.0.0.1 serving the recorded engine
expositions (tests/fixtures/engine), the agent's scraper reading each one, and a real
agent scraping into a real collector through junk and a server that does not answer.

Every wait is on a count the server keeps (requests it answered) or on a ready line.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from pyrometer.agent.engine.mapping import KNOWN
from pyrometer.agent.engine.scraper import scrape_periodically
from pyrometer.agent.shared.model import EngineReading
from pyrometer.collector.procs import Child, python_env, start

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engine"
ENGINES = {"vllm": "vllm-0.10.prom", "triton": "triton-24.04.prom",
           "torchserve": "torchserve-0.12.prom", "tgi": "tgi-3.0.prom"}
TARGET = "import time\nprint('target ready', flush=True)\nwhile True:\n    time.sleep(1)\n"


def scaled(text: str, factor: float) -> str:
    """Every counter and histogram value times `factor`, gauges as they are: the n-th
    scrape of an engine whose cumulative series grow by the recorded values each time."""
    out, kind = [], ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            kind = line.split()[3]
        elif line and not line.startswith("#") and kind != "gauge":
            name, value = line.rsplit(" ", 1)
            line = f"{name} {float(value) * factor}"
        out.append(line)
    return "\n".join(out) + "\n"


class Engines(ThreadingHTTPServer):
    """GET /ENGINE answers that engine's exposition, its counters growing per request;
    GET /flaky answers junk, then hangs past the scraper's timeout, then vLLM's."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: dict[str, int] = {}
        self.changed = threading.Condition()
        self.release = threading.Event()  # ends a hanging answer when the test is done

    def wait_hits(self, path: str, n: int, timeout: float = 60.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.hits.get(path, 0) >= n, timeout), self.hits


class _Handler(BaseHTTPRequestHandler):
    server: Engines

    def do_GET(self) -> None:
        path = self.path.strip("/")
        with self.server.changed:
            n = self.server.hits[path] = self.server.hits.get(path, 0) + 1
            self.server.changed.notify_all()
        if path == "flaky" and n == 1:
            body = b"<html><body>502 Bad Gateway</body></html>"
        elif path == "flaky" and n == 2:
            self.server.release.wait(10)  # longer than the agent's 1 s scrape timeout
            return
        elif path in ENGINES or path == "flaky":
            body = scaled((FIXTURES / ENGINES.get(path, "vllm-0.10.prom")).read_text(), n).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def engines() -> Iterator[Engines]:
    server = Engines()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def _scrape(url: str, server: Engines, path: str, scrapes: int) -> list[EngineReading]:
    got: list[EngineReading] = []

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(scrape_periodically(url, KNOWN, 1.0, got.append, stop))
        await asyncio.to_thread(server.wait_hits, path, scrapes)
        while not any(r.count for r in got):  # the scrape that was answered is converted
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(main())
    return got


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_each_engine_exposition_over_http(engines: Engines, engine: str) -> None:
    url = f"http://127.0.0.1:{engines.server_port}/{engine}"
    got = _scrape(url, engines, engine, 2)
    means = {r.metric: r.value / r.count for r in got if r.count}
    assert means["queue_time_s"] > 0, got
    assert {r.engine for r in got} == {engine}
    waiting = [r for r in got if r.metric == "requests_waiting"]
    assert (engine == "torchserve") or waiting, got  # TorchServe exposes no queue gauge


def test_agent_survives_junk_and_silence_and_ships_engine_readings(
        engines: Engines, tmp_path: Path) -> None:
    children: list[Child] = []
    try:
        script = tmp_path / "target.py"
        script.write_text(TARGET)
        target = start("target", [sys.executable, str(script)], "target ready", tmp_path,
                       env=python_env())
        children.append(target)
        db = tmp_path / "e.duckdb"
        collector = start("collector", CLI + ["collector", "--db", str(db),
                                              "--grpc-listen", "127.0.0.1:0",
                                              "--http-listen", "127.0.0.1:0"],
                          r"ingest on (?P<grpc>\S+) .*API on (?P<http>http://\S+)", tmp_path,
                          env=python_env())
        children.append(collector)
        agent = start("agent", CLI + [
            "agent", "--collector", collector.ready.group("grpc"), "--service", "llm",
            "--pid", str(target.proc.pid), "--window", "2", "--gpu", "off",
            "--requests-listen", "off", "--spool-dir", "off",
            "--scrape", f"http://127.0.0.1:{engines.server_port}/flaky",
            "--scrape-interval", "1"], "profiling pid", tmp_path, env=python_env())
        children.append(agent)
        engines.wait_hits("flaky", 6)  # junk, silence, then four good scrapes
        assert agent.stop(signal.SIGTERM, timeout=30) == 0, agent.output()
        assert collector.stop(signal.SIGTERM, timeout=30) == 0, collector.output()
        log = agent.output()
        assert log.count("engine metrics:") == 2, log  # one line when it failed, one when back
        assert "answers again" in log and "Traceback" not in log, log
        with duckdb.connect(str(db), read_only=True) as con:
            rows = con.execute("SELECT metric, value, count, engine, model FROM engine "
                               "WHERE service = 'llm'").fetchall()
    finally:
        for child in reversed(children):
            child.stop(signal.SIGKILL)
    metrics = {m for m, *_ in rows}
    assert {"queue_time_s", "requests_waiting", "kv_cache_usage", "preemptions",
            "prompt_tokens"} <= metrics, rows
    queue = [(v, c) for m, v, c, *_ in rows if m == "queue_time_s"]
    assert all(abs(v / c - 0.2) < 1e-9 for v, c in queue), queue
    assert {(e, mo) for *_, e, mo in rows} == {("vllm", "meta-llama/Llama-3.1-8B-Instruct")}
