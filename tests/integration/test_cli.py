"""The CLI's query commands against a real collector process: each runs as `pyrometer ...`
in a subprocess, and is judged by its exit code, its stdout and its one stderr line.

One collector for the module, fed over gRPC: service "shop" with two instances of two
versions, a recursive stack, requests, GPU, process and host readings, and a deploy.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import grpc
import pytest

from pyrometer.agent.shared.model import SampleKey, Telemetry
from pyrometer.collector.procs import Child, python_env, start
from pyrometer.proto import ingest_pb2, ingest_pb2_grpc
from support.ingest_builder import BASE_NS, StreamEncoder, stack
from support.telemetry_builder import S, event, gpu, host, process, request

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
T0 = BASE_NS // S
WINDOW = ["--from", str(T0), "--to", str(T0 + 600)]
READY = (r"pyrometer collector: ingest on (?P<grpc>\S+) \(gRPC\), API on (?P<http>http://\S+) "
         r"\(HTTP\), db (?P<db>.+)$")
FORWARD = stack("main", "serve", "forward")
TOKENIZE = stack("main", "serve", "tokenize")
RECURSIVE = stack("main", "walk", "walk")


def _batches() -> list[ingest_pb2.Batch]:
    a = StreamEncoder(agent_id="a", service="shop", instance="pod-a", target_pid=100,
                      labels={"version": "1.0.0"})
    b = StreamEncoder(agent_id="b", service="shop", instance="pod-b", target_pid=200,
                      labels={"version": "1.1.0"})
    telemetry = Telemetry(
        requests=tuple(request(1 + i / 10, latency_ms=12.345, request_bytes=1536) for i in range(5)),
        gpu=(gpu(1),), process=(process(1),), host=(host(1),),
        events=(event(2, version="1.1.0", previous_version="1.0.0"),))
    return [
        a.batch(1, {SampleKey(FORWARD): 5, SampleKey(TOKENIZE): 3, SampleKey(RECURSIVE): 2},
                telemetry=telemetry),
        b.batch(1, {SampleKey(FORWARD): 4}, start_ns=BASE_NS + 20 * S),
    ]


async def _ship(target: str, batches: list[ingest_pb2.Batch]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        call = ingest_pb2_grpc.IngestStub(channel).Stream(timeout=30)
        for batch in batches:
            await call.write(batch)
            await call.read()
        await call.done_writing()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    tmp = tmp_path_factory.mktemp("cli")
    child = start("collector", CLI + ["collector", "--db", str(tmp / "c.duckdb"), "--grpc-listen",
                                      "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
                  READY, tmp, env=python_env())
    try:
        for batch in _batches():  # one stream per agent, as agents do
            asyncio.run(_ship(child.ready.group("grpc"), [batch]))
        yield child
    finally:
        assert child.stop(signal.SIGTERM, timeout=30) == 0, child.output()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=60,
                          env=python_env())


def query(collector: Child, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    service = [] if command == "services" else ["--service", "shop"]
    window = [] if command == "services" else WINDOW
    return run(command, "--url", collector.ready.group("http"), *service, *window, *args)


def one_error_line(done: subprocess.CompletedProcess[str], command: str) -> str:
    """The single stderr line of a failed command, without its prefix."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    prefix = f"pyrometer {command}: error: "
    assert done.stderr.startswith(prefix), done.stderr
    return done.stderr[len(prefix):].rstrip("\n")


def test_version_and_log_level_after_the_subcommand(collector: Child) -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout == f"pyrometer {metadata.version('pyrometer')}\n"
    assert query(collector, "services", "--log-level", "DEBUG").returncode == 0


def test_services(collector: Child) -> None:
    out = query(collector, "services").stdout.splitlines()
    assert out[0].split() == ["samples", "first", "seen", "last", "seen", "service", "instances"]
    assert out[1].split() == ["14", "2025-06-15T15:06:40.000Z", "2025-06-15T15:07:10.000Z",
                              "shop", "pod-a,", "pod-b"]
    doc = json.loads(query(collector, "services", "--json").stdout)
    assert doc["services"][0]["samples"] == 14


def test_flamegraph_is_a_top_functions_table_by_default(collector: Child) -> None:
    done = query(collector, "flamegraph")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    head, columns, *rows = done.stdout.splitlines()
    assert head.startswith("shop  2025-06-15T15:06:40.000Z .. ") and "14 samples at 100 Hz" in head
    assert columns.split() == ["self", "self%", "total", "total%", "function"]
    assert rows[0].split() == ["9", "64.3%", "9", "64.3%", "forward", "(app.py)"]
    # recursion: walk's total counts each sample once, its self too
    walk = next(r for r in rows if r.endswith("walk (app.py)"))
    assert walk.split()[:4] == ["2", "14.3%", "2", "14.3%"]
    by_total = query(collector, "flamegraph", "--sort", "total", "--top", "1").stdout
    assert by_total.splitlines()[2].split()[:4] == ["0", "0.0%", "14", "100.0%"]


def test_flamegraph_filters_pid_and_version(collector: Child) -> None:
    assert "4 samples" in query(collector, "flamegraph", "--pid", "200").stdout
    done = query(collector, "flamegraph", "--version", "1.0.0", "--format", "json")
    assert json.loads(done.stdout)["total"] == 10


def test_a_filter_that_matches_nothing_names_the_values_seen(collector: Child) -> None:
    line = one_error_line(query(collector, "flamegraph", "--version", "9.9"), "flamegraph")
    assert line == ("no samples with version 9.9 between 2025-06-15T15:06:40.000Z and "
                    "2025-06-15T15:16:40.000Z; versions seen: 1.0.0, 1.1.0")
    # so does a format written to a file, which is then not written
    out = collector.log_path.parent / "never.pb.gz"
    line = one_error_line(query(collector, "flamegraph", "--pid", "7", "--format", "pprof",
                                "-o", str(out)), "flamegraph")
    assert line.endswith("pids seen: 100, 200") and not out.exists()
    line = one_error_line(query(collector, "diff", "--instance", "pod-x"), "diff")
    assert "instances seen: pod-a, pod-b" in line


def test_an_empty_window_is_said_not_hidden(collector: Child) -> None:
    done = run("flamegraph", "--url", collector.ready.group("http"), "--service", "shop",
               "--from", str(T0 + 3600), "--to", str(T0 + 7200))
    assert done.returncode == 0
    assert "no samples of shop between" in done.stdout and "it has samples from" in done.stdout


def test_o_writes_the_chosen_format(collector: Child, tmp_path: Path) -> None:
    out = tmp_path / "fg.pb.gz"
    done = query(collector, "flamegraph", "--format", "pprof", "-o", str(out))
    assert done.returncode == 0 and done.stdout == ""
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    assert done.stderr.startswith(f"pyrometer flamegraph: wrote {out} (pprof, ")
    html = tmp_path / "fg.html"
    assert query(collector, "flamegraph", "-o", str(html)).returncode == 0
    assert html.read_text().lstrip().lower().startswith("<!doctype html")
    folded = query(collector, "flamegraph", "--format", "folded").stdout
    assert "main (app.py:1);serve (app.py:2);forward (app.py:3) 9" in folded.splitlines()


@pytest.mark.parametrize(("path", "message"), [
    ("missing-dir/fg.html", "the folder"),
    (".", "is a directory"),
    ("/dev/full", "cannot write it: No space left on device"),
])
def test_an_unwritable_output_is_one_line(collector: Child, tmp_path: Path, path: str,
                                          message: str) -> None:
    target = path if path.startswith("/") else str(tmp_path / path)
    line = one_error_line(query(collector, "flamegraph", "-o", target), "flamegraph")
    assert line.startswith(f"-o {target}: ") and message in line


def test_url_at_the_grpc_port_says_so(collector: Child) -> None:
    line = one_error_line(run("services", "--url", f"http://{collector.ready.group('grpc')}"),
                          "services")
    assert "gRPC ingest port" in line and "7071" in line


def test_a_url_without_a_scheme_is_one_line() -> None:
    line = one_error_line(run("services", "--url", "127.0.0.1:7071"), "services")
    assert line == ("--url '127.0.0.1:7071' is not an http:// or https:// URL; "
                    "e.g. --url http://127.0.0.1:7071")


@pytest.mark.parametrize("command", ["flamegraph", "spikes", "diff"])
def test_an_unknown_service_is_a_404(collector: Child, command: str) -> None:
    done = run(command, "--url", collector.ready.group("http"), "--service", "nope", *WINDOW)
    line = one_error_line(done, command)
    assert line.startswith("404 from ") and "unknown service 'nope'" in line
    assert "pyrometer services" in line


@pytest.mark.parametrize(("args", "flag"), [
    (["--from", "yesterday"], "--from 'yesterday' is not a time"),
    (["--to", "now-15x"], "--to 'now-15x'"),
    (["--from", "2025-06-15T12:00:00"], "--from '2025-06-15T12:00:00' has no time zone"),
])
def test_time_errors_list_every_accepted_form(args: list[str], flag: str) -> None:
    line = one_error_line(run("flamegraph", "--service", "s", *args), "flamegraph")
    assert line.startswith(flag)
    for form in ("RFC 3339", "2026-11-28T10:42:00Z", "+01:00", "unix seconds", "1795000000.5",
                 "now-15m", "now+5m", "units ms, s, m, h, d, w"):
        assert form in line, line


def test_a_bad_duration_lists_the_accepted_forms() -> None:
    line = one_error_line(run("latency", "--service", "s", "--step", "soon"), "latency")
    assert line.startswith("--step 'soon' is not a duration") and "1h30m" in line


def test_latency_rounds_for_people_and_json_keeps_precision(collector: Child) -> None:
    head, columns, row = query(collector, "latency", "--step", "1m").stdout.splitlines()
    assert head.endswith("step 1m: 5 requests") and "p99 ms" in columns
    cells = row.split()
    assert "12.3" in cells and "KiB" in cells and "1.5" in cells
    doc = json.loads(query(collector, "latency", "--step", "1m", "--json").stdout)
    assert doc["points"][0]["latency_p99_ms"] == pytest.approx(12.345)


def test_gpu_and_process_tables(collector: Child) -> None:
    gpu_out = query(collector, "gpu", "--step", "1m").stdout
    assert "GPU 0 NVIDIA H100 of pod-a" in gpu_out and "40.0 GiB/80.0 GiB" in gpu_out
    proc = query(collector, "process", "--step", "1m").stdout
    assert "process 100 of pod-a" in proc and "2.0 GiB" in proc and "host of pod-a" in proc


def test_events_and_diff(collector: Child) -> None:
    events = query(collector, "events").stdout.splitlines()
    assert "1 event" in events[0]
    assert events[2].split()[1:4] == ["deploy", "1.0.0", "->"]
    diff = query(collector, "diff", "--baseline-from", str(T0), "--baseline-to", str(T0 + 15),
                 "--from", str(T0 + 15), "--to", str(T0 + 30))
    assert diff.returncode == 0, diff.stderr
    assert "(4 samples) against" in diff.stdout and "tokenize (app.py)" in diff.stdout


def test_a_terminal_gets_the_table_never_html_or_pprof(collector: Child) -> None:
    args = ["flamegraph", "--url", collector.ready.group("http"), "--service", "shop", *WINDOW]
    status, output = _in_terminal(args)
    assert status == 0 and "self%" in output and "<html" not in output.lower()
    status, output = _in_terminal([*args, "--format", "pprof"])
    assert status == 2 and "--format pprof is not for a terminal" in output


def _in_terminal(args: list[str]) -> tuple[int, str]:
    """Run the CLI with its stdout on a pseudo-terminal: (exit code, what it showed)."""
    leader, follower = pty.openpty()
    with subprocess.Popen(CLI + args, stdout=follower, stderr=follower, env=python_env()) as proc:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_stages_requests_cost_and_slos_print_short_tables(collector: Child) -> None:
    stages = query(collector, "stages")
    assert stages.returncode == 0, stages.stderr
    lines = stages.stdout.splitlines()
    assert "14 samples, 5 requests" in lines[0]
    # forward (9 samples) is the forward pass, tokenize (3) tokenization: 10 ms a sample
    assert any(line.split()[:2] == ["64.3%", "18.0"] and line.endswith("forward pass")
               for line in lines), stages.stdout
    slow = query(collector, "requests", "--limit", "3")
    assert slow.returncode == 0 and "the 3 slowest requests" in slow.stdout, slow.stderr
    assert slow.stdout.count("12.3 ") == 3  # ms to 0.1, the one latency sent
    cost = query(collector, "cost")
    assert cost.returncode == 0 and "GPU-s/1000 req" in cost.stdout, cost.stderr
    # one GPU reading has no interval before it: no GPU time, shown as "-", not 0
    assert cost.stdout.splitlines()[-1].split() == ["5", "12.3", "12.3", "0", "-", "-", "1.0.0"]
    slos = run("slos", "--url", collector.ready.group("http"))
    assert slos.returncode == 0 and "0 objectives (the collector has none" in slos.stdout
    as_json = json.loads(query(collector, "requests", "--json", "--limit", "1").stdout)
    assert as_json["requests"][0]["latency_ms"] == 12.345
    bad = query(collector, "requests", "--limit", "500")
    assert "limit 500: expected 1-100" in one_error_line(bad, "requests")
