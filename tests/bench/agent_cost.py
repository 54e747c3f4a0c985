"""What the Pyrometer agent costs, next to bare py-spy sampling the same target.

A measurement, not a test (pytest does not collect it). Run from the repository root:

    .venv/bin/python tests/bench/agent_cost.py [--seconds 60] [--rate 100] [--windows 4] [--json OUT]

One CPU-bound target runs throughout. Arm A profiles it with the real agent shipping to
a real collector; arm B with ``py-spy record`` alone, for the same time. CPU is the
RUSAGE_CHILDREN delta around starting and reaping the profiler, so it includes the
agent's py-spy children (the agent reaps them) but not the collector or the target,
which are reaped only after both arms. Memory is sampled with psutil (ru_maxrss of
children is one maximum over all children, useless here). Bytes on the wire are
computed in-process with the agent's own sampler and encoder over a few windows; the
real stream adds HTTP/2 and gRPC framing (14 bytes a message, one HEADERS per stream)
and the connection's own frames (settings, pings, window updates).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import re
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from pyrometer.agent.encoder import AgentIdentity, StreamEncoder
from pyrometer.agent.model import ProfileWindow, Stack
from pyrometer.agent.pyspy import SamplerConfig, StackSampler, find_pyspy
from pyrometer.collector.procs import Child, python_env, start
from pyrometer.collector.profile import Profile
from pyrometer.collector.render.pprof import render_pprof

CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
MIB = 1024 * 1024
# One busy thread, a few nested calls; json and the generator add stdlib frames, so
# there are a few dozen distinct stacks rather than one.
TARGET = """
import json
import math

def parse(n):
    return json.loads(json.dumps({"values": list(range(n))}))

def score(n):
    return sum(math.sqrt(i) for i in range(n))

def square_sum(n):
    total = 0
    for i in range(n):
        total += i * i
    return total

def handle():
    parse(300)
    score(3000)
    return square_sum(5000)

print("target ready", flush=True)
while True:
    handle()
"""


@dataclass(frozen=True, slots=True)
class Arm:
    """One profiler's footprint over one run."""

    samples: int
    cpu_s: float  # the profiler and everything it spawned, startup included
    startup_cpu_s: float  # the profiler's own CPU up to its ready line
    main_cpu_s: float  # the profiler's own CPU (py-spy children excluded) just before it stops
    peak_rss_mib: float  # the profiler plus its children, at the same moment
    peak_main_rss_mib: float
    peak_pyspy_rss_mib: float  # all py-spy processes alive at once (two at a handover)
    target_cpu_s: float  # how much CPU the target still got: contention shows here
    collector_cpu_s: float | None = None  # not part of the agent; for context

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_s / self.samples if self.samples else float("nan")


@dataclass(frozen=True, slots=True)
class WireWindow:
    """Sizes of one window as the agent sends it, and as pprof for comparison."""

    samples: int
    stacks: int
    batch_bytes: int  # serialized ingest Batch
    gzip_bytes: int  # what gRPC's per-message gzip makes of it
    pprof_gz_bytes: int


def children_cpu() -> float:
    """CPU seconds of all reaped children of this process (and their reaped children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.NoSuchProcess:  # a py-spy that exited between listing and reading
        return 0


def watch(pid: int, seconds: float) -> tuple[tuple[float, float, float], float]:
    """Sample RSS of ``pid`` and its descendants for ``seconds``.

    Returns the RSS peaks in MiB (main process plus py-spy processes at one moment,
    main process, py-spy processes) and, taken last, the main process's own CPU seconds.
    """
    proc, peaks = psutil.Process(pid), [0, 0, 0]
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        main = rss(proc)
        kids = sum(rss(child) for child in proc.children(recursive=True))
        for i, value in enumerate((main + kids, main, kids)):
            peaks[i] = max(peaks[i], value)
        time.sleep(min(0.25, left))
    return (peaks[0] / MIB, peaks[1] / MIB, peaks[2] / MIB), own_cpu(pid)


def run_agent(args: argparse.Namespace, tmp: Path, target: Child, collector: Child) -> Arm:
    """Arm A: the agent, default 10 s windows, shipping to ``collector`` until SIGTERM."""
    api, ingest = collector.ready.group("http"), collector.ready.group("grpc")
    target_before, collector_before = own_cpu(target.pid), own_cpu(collector.pid)
    before = children_cpu()
    agent = start("agent", CLI + ["agent", "--collector", ingest, "--service", "bench",
                                  "--pid", str(target.pid), "--rate", str(args.rate)],
                  "profiling pid", tmp, env=python_env())
    startup = own_cpu(agent.pid)
    peaks, main_cpu = watch(agent.pid, args.seconds)
    if agent.stop(signal.SIGTERM, timeout=60) != 0:
        raise SystemExit(f"agent failed:\n{agent.output()[-2000:]}")
    cpu = children_cpu() - before  # the agent exited only after it reaped its py-spys
    with urllib.request.urlopen(f"{api}/api/v1/services", timeout=30) as response:
        services = json.loads(response.read())["services"]
    # An exited agent has had every batch acked, and an ack means committed.
    samples = sum(s["samples"] for s in services if s["name"] == "bench")
    return Arm(samples, cpu, startup, main_cpu, *peaks,
               target_cpu_s=own_cpu(target.pid) - target_before,
               collector_cpu_s=own_cpu(collector.pid) - collector_before)


def run_pyspy(args: argparse.Namespace, tmp: Path, target: Child) -> Arm:
    """Arm B: one ``py-spy record`` for the whole time, SIGINT at the end."""
    target_before, before = own_cpu(target.pid), children_cpu()
    spy = start("py-spy", [find_pyspy(), "record", "--format", "raw", "--nonblocking",
                           "-r", str(args.rate), "-o", str(tmp / "bare.raw"),
                           "--pid", str(target.pid)], "Sampling process", tmp)
    startup = own_cpu(spy.pid)
    peaks, main_cpu = watch(spy.pid, args.seconds)
    spy.stop(signal.SIGINT, timeout=60)
    cpu = children_cpu() - before
    found = re.search(r"Samples: (\d+)", spy.output())
    if found is None:
        raise SystemExit(f"py-spy printed no sample count:\n{spy.output()[-2000:]}")
    return Arm(int(found.group(1)), cpu, startup, main_cpu, *peaks,
               target_cpu_s=own_cpu(target.pid) - target_before)


def as_profile(window: ProfileWindow) -> Profile:
    """The window as the collector would serve it: counts merged by stack."""
    merged: dict[Stack, int] = {}
    for key, count in window.counts.items():
        merged[key.stack] = merged.get(key.stack, 0) + count
    samples = tuple(sorted(merged.items(), key=lambda item: -item[1]))
    return Profile("bench", window.start_ns, window.end_ns, samples, rate_hz=window.rate_hz)


async def wire_windows(pid: int, rate: int, count: int) -> list[WireWindow]:
    """Encode ``count`` full windows exactly as one agent stream would, and size them."""
    host = socket.gethostname()
    encoder = StreamEncoder(AgentIdentity(agent_id=uuid.uuid4().hex, service="bench",
                                          instance=host, host=host, target_pid=pid,
                                          agent_version="0.0.0"))
    sampler = StackSampler(SamplerConfig(rate_hz=rate), pid)
    sized: list[WireWindow] = []
    async for window in sampler.windows():
        if len(sized) == count:
            continue  # the partial window that stop() yields
        body = encoder.encode(len(sized) + 1, window).SerializeToString()
        # grpc core deflates each message at zlib's default level
        sized.append(WireWindow(window.total, len(window.counts), len(body),
                                len(gzip.compress(body, compresslevel=6, mtime=0)),
                                len(render_pprof(as_profile(window)))))
        if len(sized) == count:
            await sampler.stop()
    return sized


def per_sample(windows: list[WireWindow], field: str) -> tuple[float, float]:
    """Bytes per sample of the first window, and the median over the later ones."""
    ratios = [getattr(w, field) / w.samples for w in windows if w.samples]
    return ratios[0], statistics.median(ratios[1:] or ratios)


def report(args: argparse.Namespace, agent: Arm, bare: Arm,
           wire: list[WireWindow]) -> dict[str, object]:
    """Print the table; return the same figures for --json."""
    rows = [("samples", "samples", "d"), ("CPU s", "cpu_s", ".2f"),
            ("CPU s / 1000 samples", "cpu_per_1000", ".3f"),
            ("  startup, to the ready line", "startup_cpu_s", ".2f"),
            ("  main process, to the stop", "main_cpu_s", ".2f"),
            ("peak RSS MiB (all)", "peak_rss_mib", ".1f"),
            ("  main process", "peak_main_rss_mib", ".1f"),
            ("  py-spy processes", "peak_pyspy_rss_mib", ".1f"),
            ("target CPU s", "target_cpu_s", ".2f")]
    print(f"\n{args.seconds:g} s per arm at {args.rate} Hz{'':6}{'agent':>10}{'py-spy':>10}")
    for label, name, fmt in rows:
        print(f"{label:<34}{getattr(agent, name):>10{fmt}}{getattr(bare, name):>10{fmt}}")
    ratio = agent.cpu_per_1000 / bare.cpu_per_1000
    # startup is a fixed cost that a long-lived sidecar pays once
    steady = ((agent.cpu_s - agent.startup_cpu_s) / agent.samples) / (
        (bare.cpu_s - bare.startup_cpu_s) / bare.samples)
    print(f"{'collector CPU s (not the agent)':<34}{agent.collector_cpu_s:>10.2f}")
    print(f"agent/bare CPU per 1000 samples: {ratio:.2f}x ({steady:.2f}x without startup)")
    print(f"\nbytes per sample, {len(wire)} windows{'':7}{'first':>10}{'steady':>10}")
    sizes: dict[str, tuple[float, float]] = {}
    for label, name in (("ingest batch, protobuf", "batch_bytes"),
                        ("ingest batch, gzip (on the wire)", "gzip_bytes"),
                        ("pprof, gzipped", "pprof_gz_bytes")):
        sizes[name] = per_sample(wire, name)
        print(f"{label:<34}{sizes[name][0]:>10.2f}{sizes[name][1]:>10.2f}")
    print("windows (samples, stacks, gzip bytes): "
          + ", ".join(f"({w.samples}, {w.stacks}, {w.gzip_bytes})" for w in wire))
    return {"seconds": args.seconds, "rate_hz": args.rate, "ratio_cpu_per_1000": ratio,
            "ratio_cpu_per_1000_without_startup": steady,
            "agent": asdict(agent) | {"cpu_per_1000": agent.cpu_per_1000},
            "pyspy": asdict(bare) | {"cpu_per_1000": bare.cpu_per_1000},
            "wire_windows": [asdict(w) for w in wire],
            "wire_per_sample": {k: {"first": v[0], "steady": v[1]} for k, v in sizes.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each arm")
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--windows", type=int, default=4, help="10 s windows to size (>= 2)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="pyrometer-bench-") as name:
        tmp = Path(name)
        (tmp / "target.py").write_text(TARGET)
        children: list[Child] = []
        try:
            # Collector and target start first and are reaped last, so that neither
            # shows up in the arms' RUSAGE_CHILDREN deltas.
            collector = start("collector", CLI + [
                "collector", "--db", str(tmp / "bench.duckdb"), "--grpc-listen", "127.0.0.1:0",
                "--http-listen", "127.0.0.1:0"],
                r"ingest on (?P<grpc>\S+) .*API on (?P<http>http://\S+)", tmp, env=python_env())
            children.append(collector)
            target = start("target", [sys.executable, str(tmp / "target.py")], "target ready", tmp)
            children.append(target)
            agent = run_agent(args, tmp, target, collector)
            bare = run_pyspy(args, tmp, target)
            wire = asyncio.run(wire_windows(target.pid, args.rate, max(2, args.windows)))
        finally:
            for child in reversed(children):
                child.stop(signal.SIGTERM)
    figures = report(args, agent, bare, wire)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
