"""`pyrometer demo`: a collector, the demo model server, the agent beside it, and load.

Runs for about a minute, writes the HTML flame graph, prints where it is and the
functions that took the most samples, and stops everything it started (with --keep it
leaves the collector up until Ctrl-C, to explore the API). Standard library only: the
collector and the agent run as child processes exactly as a user would run them.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pyrometer.agent.shared.errors import ConfigError
from pyrometer.collector.api import client
from pyrometer.collector.cli import text
from pyrometer.collector.procs import Child, python_env, start

SERVICE = "demo-model"
DEMO_DIR = Path(__file__).resolve().parent.parent / "deploy" / "demo"
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    parser.add_argument("--out", default="demo-out", help="folder for the DuckDB file and outputs")
    parser.add_argument("--window", type=float, default=10.0, help="agent window seconds")
    parser.add_argument("--keep", action="store_true",
                        help="leave the collector running afterwards (Ctrl-C stops it)")


def main(args: argparse.Namespace) -> int:
    if not (DEMO_DIR / "model_server.py").exists():
        # the demo model server and load generator live in deploy/demo, which the installed
        # package does not carry (they are an example app, not part of Pyrometer)
        raise ConfigError("pyrometer demo runs from a source checkout of Pyrometer (`make demo`): "
                          f"it starts deploy/demo/model_server.py, not found at {DEMO_DIR}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="logs-", dir=out))
    children: list[Child] = []
    started_ns = time.time_ns()
    try:
        collector = _start_collector(out, logs, children)
        api = collector.ready.group("http")
        _run_profiled_load(args, collector.ready.group("grpc"), logs, children)
        _report(api, out, started_ns)
        if args.keep:
            print(f"collector still running (Ctrl-C to stop): try {api}/api/v1/latency?"
                  f"service={SERVICE}&from=now-15m, and /flamegraph, /gpu, /process, /events")
            _wait_for_interrupt(collector)
        return 0
    finally:
        for child in reversed(children):
            child.stop()


def _start_collector(out: Path, logs: Path, children: list[Child]) -> Child:
    db = out / "demo.duckdb"
    for stale in (db, db.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)  # each demo run starts from an empty database
    child = start("collector", CLI + ["collector", "--db", str(db), "--grpc-listen", "127.0.0.1:0",
                                      "--http-listen", "127.0.0.1:0"],
                  r"ingest on (?P<grpc>\S+) .*API on (?P<http>http://\S+)", logs,
                  env=python_env())
    children.append(child)
    print(f"collector: gRPC {child.ready.group('grpc')}, API {child.ready.group('http')}, db {db}")
    return child


def _run_profiled_load(args: argparse.Namespace, grpc_addr: str, logs: Path,
                       children: list[Child]) -> None:
    requests_addr = f"127.0.0.1:{free_udp_port()}"
    # the server reports each request to the agent through Pyrometer's WSGI middleware
    server = start("model-server", [sys.executable, str(DEMO_DIR / "model_server.py"),
                                    "--host", "127.0.0.1", "--port", "0"],
                   r"listening on (?P<url>http://\S+)", logs,
                   env=python_env(APP_VERSION="1.0.0", PYROMETER_REQUESTS_ADDR=requests_addr))
    children.append(server)
    url = server.ready.group("url")
    print(f"model server: {url} (pid {server.pid})")
    agent = start("agent", CLI + ["agent", "--collector", grpc_addr, "--service", SERVICE,
                                  "--pid", str(server.pid), "--window", str(args.window),
                                  "--requests-listen", requests_addr],
                  r"profiling pid", logs, env=python_env())
    children.append(agent)
    print(f"agent: profiling pid {server.pid} at 100 Hz, {args.window:g} s windows")
    print(f"load: {args.rate:g} requests/s for {args.duration:g} s ...", flush=True)
    load = start("loadgen", [sys.executable, str(DEMO_DIR / "loadgen.py"), "--url", url,
                             "--rate", str(args.rate), "--duration", str(args.duration)],
                 r"loadgen", logs, env=python_env())
    children.append(load)
    load.proc.wait(args.duration + 120)
    summary = last_json_line(load.output())
    if summary:
        print(f"load done: {summary.get('ok')} ok, {summary.get('errors')} errors, "
              f"p50 {summary.get('p50_ms')} ms, p99 {summary.get('p99_ms')} ms")
    agent.stop(signal.SIGTERM)  # ships the last, partial window before exiting


def _report(api: str, out: Path, started_ns: int) -> None:
    params = {"service": SERVICE, "from": str(started_ns / 1e9), "to": "now"}
    html = client.get(api, "/api/v1/flamegraph", {**params, "format": "html"})
    path = out / "flamegraph.html"
    path.write_bytes(html)
    tree = json.loads(client.get(api, "/api/v1/flamegraph", {**params, "format": "json"}))
    print(f"\nflame graph: {path}  ({tree.get('total', 0)} samples)")
    print("top functions by own samples:")
    print(text.functions_table(text.top_functions(tree.get("tree", tree), 8), tree.get("total", 0)))
    latency = json.loads(client.get(api, "/api/v1/latency", {**params, "step": "10s"}))
    points = latency.get("points", [])
    if points:
        p99s = [p["latency_p99_ms"] for p in points]
        print(f"\nrequests recorded by the middleware: {sum(p['count'] for p in points)}, "
              f"p99 per 10 s step {min(p99s):.1f}-{max(p99s):.1f} ms")


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 for the agent's --requests-listen (the tests use it too)."""
    # a port the kernel just handed out is free; the agent binds it a moment later
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def last_json_line(text: str) -> dict[str, Any] | None:
    """The last line of `text` that is a JSON object (a child's summary line), or None."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except ValueError:
                continue
    return None


def _wait_for_interrupt(collector: Child) -> None:
    try:
        collector.proc.wait()
    except KeyboardInterrupt:
        pass
