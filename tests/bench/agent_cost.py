"""Rows 2 and 3 of BENCHMARKS.md: what the agent costs next to bare py-spy sampling the
same target, and what it sends on the wire next to the same windows as gzipped pprof.

Run from the repository root (or through `make bench`, which runs every row):

    .venv/bin/python tests/bench/agent_cost.py [--size tiny|full] [--json OUT]

Row 2. One CPU-bound target runs throughout. In each round, arm A profiles it with the
real agent shipping to a real collector; arm B with ``py-spy record`` alone, for the
same time; the order alternates between rounds. CPU is the RUSAGE_CHILDREN delta around
starting and reaping the profiler, so it includes the agent's py-spy children (the
agent reaps them) but not the collector or the target, which are reaped only after
every arm. Memory is sampled with psutil (ru_maxrss of children is one maximum over all
children, useless here).

Row 3. Bytes on the wire are computed in-process with the agent's own sampler and
encoder over a few windows of two targets (the one above, with a few dozen distinct
stacks, and a branching one with a few hundred); the real stream adds HTTP/2 and gRPC
framing (14 bytes a message, one HEADERS per stream) and the connection's own frames
(settings, pings, window updates).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import agent_threads, common  # noqa: E402
from pyrometer.agent.config import AgentConfig  # noqa: E402
from pyrometer.agent.shared.model import ProfileWindow, Stack  # noqa: E402
from pyrometer.agent.ship.encoder import AgentIdentity, StreamEncoder  # noqa: E402
from pyrometer.agent.stacks.sampler import SamplerConfig, StackSampler, find_pyspy  # noqa: E402
from pyrometer.collector.model import Profile  # noqa: E402
from pyrometer.collector.procs import Child, python_env, start  # noqa: E402
from pyrometer.collector.render.pprof import render_pprof  # noqa: E402

TITLE = "Agent cost and bytes on the wire"
RATE_HZ = 100
MIB = common.MIB
MB = 1_000_000
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


# Stacks that branch: each call picks one of three functions for the last few levels,
# under a random depth, so a window holds a few hundred distinct stacks (closer to a
# model server's request paths than the busy loop above, and a harder case for the wire).
TARGET_VARIED = """
import random

def a(n, left): return step(n, left)
def b(n, left): return step(n, left)
def c(n, left): return step(n, left)

def step(n, left):
    if left == 0:
        return sum(i * i for i in range(n))
    return random.choice((a, b, c))(n, left - 1)

def nest(depth):
    if depth == 0:
        return step(2000, 4)
    return nest(depth - 1)

print("target ready", flush=True)
while True:
    nest(random.randint(5, 15))
"""


@dataclass(frozen=True, slots=True)
class Params:
    seconds: float  # each arm, each round
    rounds: int
    windows: int  # wire windows to size per target (>= 2: first and steady state)
    period_s: float  # wire window length
    starts: int  # short py-spy runs that price its start-up (see pyspy_start_cpu)


SIZES = {"tiny": Params(seconds=4.0, rounds=1, windows=2, period_s=2.0, starts=1),
         "full": Params(seconds=45.0, rounds=3, windows=4, period_s=10.0, starts=5)}
# the agent's default profile window: it starts a py-spy for each one
AGENT_WINDOW_S = AgentConfig.__dataclass_fields__["window_s"].default
PYSPY_START_SAMPLING_S = 1


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
    # memory only the main process holds: RSS less the shared libraries' pages that
    # other processes on the host map too (what a second agent on the node would add)
    peak_main_uss_mib: float
    target_cpu_s: float  # how much CPU the target still got: contention shows here
    collector_cpu_s: float | None = None  # not part of the agent; for context
    # the agent's own process after its start-up, ms of CPU a second by what each thread
    # does (agent_threads.py); empty for bare py-spy
    threads_ms_per_s: dict[str, float] = dataclasses.field(default_factory=dict)

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


def rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.NoSuchProcess:  # a py-spy that exited between listing and reading
        return 0


def uss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_full_info().uss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def pyspy_children(proc: psutil.Process) -> list[psutil.Process]:
    """The py-spy processes under ``proc``. A child caught between fork and exec is still a
    copy of the agent and shows the agent's whole RSS (the pages are shared, not new), so
    only processes already running py-spy count."""
    found = []
    for child in proc.children(recursive=True):
        try:
            if child.name().startswith("py-spy"):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def watch(pid: int, seconds: float, poll: Callable[[], None] | None = None
          ) -> tuple[tuple[float, float, float, float], float]:
    """Sample the memory of ``pid`` and its descendants for ``seconds`` (and call
    ``poll`` each time, when given).

    Returns the peaks in MiB (RSS of the main process plus py-spy processes at one
    moment, main process RSS, py-spy processes RSS, main process USS) and, taken last,
    the main process's own CPU seconds.
    """
    proc, peaks = psutil.Process(pid), [0, 0, 0, 0]
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        main = rss(proc)
        kids = sum(rss(child) for child in pyspy_children(proc))
        for i, value in enumerate((main + kids, main, kids, uss(proc))):
            peaks[i] = max(peaks[i], value)
        if poll is not None:
            poll()
        time.sleep(min(0.25, left))
    return (peaks[0] / MIB, peaks[1] / MIB, peaks[2] / MIB, peaks[3] / MIB), common.process_cpu_s(pid)


def run_agent(work: Path, seconds: float, service: str, target: Child, collector: Child) -> Arm:
    """Arm A: the agent with default flags (10 s windows), shipping to ``collector``."""
    api, ingest = collector.ready.group("http"), collector.ready.group("grpc")
    target_before, collector_before = common.process_cpu_s(target.pid), common.process_cpu_s(collector.pid)
    before = children_cpu()
    agent = start(f"agent-{service}", common.CLI + [
        "agent", "--collector", ingest, "--service", service, "--pid", str(target.pid),
        "--rate", str(RATE_HZ)], "profiling pid", work, env=python_env())
    startup = common.process_cpu_s(agent.pid)
    threads = agent_threads.ThreadWatch(agent.pid)
    peaks, main_cpu = watch(agent.pid, seconds, threads.poll)
    # `py-spy dump` is this process's child too, reaped before the agent: its CPU (about
    # 10 ms) is taken out of the agent's below
    dumped = children_cpu()
    by_thread = threads.breakdown(agent_threads.python_names(agent.pid), seconds)
    dumped = children_cpu() - dumped
    if agent.stop(signal.SIGTERM, timeout=60) != 0:
        raise SystemExit(f"agent failed:\n{agent.output()[-2000:]}")
    cpu = children_cpu() - before - dumped  # the agent exited only after it reaped its py-spys
    samples = common.stored_samples(api, service)  # an exited agent has had every batch acked
    return Arm(samples, cpu, startup, main_cpu, *peaks,
               target_cpu_s=common.process_cpu_s(target.pid) - target_before,
               collector_cpu_s=common.process_cpu_s(collector.pid) - collector_before,
               threads_ms_per_s=by_thread)


def run_pyspy(work: Path, seconds: float, name: str, target: Child) -> Arm:
    """Arm B: one ``py-spy record`` for the whole time, SIGINT at the end."""
    target_before, before = common.process_cpu_s(target.pid), children_cpu()
    spy = start(f"py-spy-{name}", [find_pyspy(), "record", "--format", "raw", "--nonblocking",
                                   "-r", str(RATE_HZ), "-o", str(work / f"{name}.raw"),
                                   "--pid", str(target.pid)], "Sampling process", work)
    startup = common.process_cpu_s(spy.pid)
    peaks, main_cpu = watch(spy.pid, seconds)
    spy.stop(signal.SIGINT, timeout=60)
    cpu = children_cpu() - before
    found = re.search(r"Samples: (\d+)", spy.output())
    if found is None:
        raise SystemExit(f"py-spy printed no sample count:\n{spy.output()[-2000:]}")
    return Arm(int(found.group(1)), cpu, startup, main_cpu, *peaks,
               target_cpu_s=common.process_cpu_s(target.pid) - target_before)


def pyspy_start_cpu(work: Path, target: Child) -> float:
    """CPU seconds of one `py-spy record` that samples the target for 1 s: its start-up
    (reading the target's memory maps and its interpreter's symbols) and 1 s of sampling.
    The agent starts one per profile window, where bare py-spy starts once."""
    before = children_cpu()
    spy = subprocess.run([find_pyspy(), "record", "--format", "raw", "--nonblocking",
                          "-r", str(RATE_HZ), "-d", str(PYSPY_START_SAMPLING_S),
                          "-o", str(work / "start.raw"), "--pid", str(target.pid)],
                         capture_output=True, text=True, timeout=120, check=False)
    if spy.returncode != 0:
        raise SystemExit(f"py-spy failed:\n{spy.stderr[-2000:]}")
    return children_cpu() - before


def as_profile(window: ProfileWindow) -> Profile:
    """The window as the collector would serve it: counts merged by stack."""
    merged: dict[Stack, int] = {}
    for key, count in window.counts.items():
        merged[key.stack] = merged.get(key.stack, 0) + count
    samples = tuple(sorted(merged.items(), key=lambda item: -item[1]))
    return Profile("bench", window.start_ns, window.end_ns, samples, rate_hz=window.rate_hz)


async def wire_windows(pid: int, count: int, period_s: float) -> list[WireWindow]:
    """Encode ``count`` full windows exactly as one agent stream would, and size them."""
    host = socket.gethostname()
    encoder = StreamEncoder(AgentIdentity(agent_id=uuid.uuid4().hex, service="bench",
                                          instance=host, host=host, target_pid=pid,
                                          agent_version="0.0.0"))
    sampler = StackSampler(SamplerConfig(rate_hz=RATE_HZ, period_s=period_s,
                                         lead_s=min(1.0, period_s / 4)), pid)
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


def per_sample(windows: list[dict[str, int]], field: str) -> tuple[float, float]:
    """Bytes per sample of the first window, and the median over the later ones."""
    ratios = [w[field] / w["samples"] for w in windows if w["samples"]]
    if not ratios:
        return float("nan"), float("nan")
    return ratios[0], statistics.median(ratios[1:] or ratios)


def measure(size: str, work: Path) -> dict[str, Any]:
    """Row 2 in alternating rounds on one long-running target, then row 3 on two."""
    params = SIZES[size]
    (work / "target.py").write_text(TARGET)
    (work / "target_varied.py").write_text(TARGET_VARIED)
    children: list[Child] = []
    rounds: list[dict[str, Any]] = []
    wire: dict[str, list[dict[str, int]]] = {}
    try:
        # Collector and target start first and are reaped last, so that neither
        # shows up in the arms' RUSAGE_CHILDREN deltas.
        collector = common.start_collector(work)
        children.append(collector)
        target = start("target", [sys.executable, str(work / "target.py")], "target ready", work)
        children.append(target)
        for n in range(params.rounds):
            arms: dict[str, Arm] = {}
            order = ("agent", "pyspy") if n % 2 == 0 else ("pyspy", "agent")
            for arm in order:
                if arm == "agent":
                    arms[arm] = run_agent(work, params.seconds, f"bench-{n}", target, collector)
                else:
                    arms[arm] = run_pyspy(work, params.seconds, f"bare-{n}", target)
            rounds.append({name: asdict(a) | {"cpu_per_1000": a.cpu_per_1000}
                           for name, a in arms.items()} | {"order": list(order)})
        starts = [pyspy_start_cpu(work, target) for _ in range(params.starts)]
        wire["busy"] = [asdict(w) for w in asyncio.run(
            wire_windows(target.pid, params.windows, params.period_s))]
        varied = start("target-varied", [sys.executable, str(work / "target_varied.py")],
                       "target ready", work)
        children.append(varied)
        wire["branching"] = [asdict(w) for w in asyncio.run(
            wire_windows(varied.pid, params.windows, params.period_s))]
    finally:
        for child in reversed(children):
            child.stop(signal.SIGTERM)
    return summarise(params, rounds, wire, starts)


def summarise(params: Params, rounds: list[dict[str, Any]],
              wire: dict[str, list[dict[str, int]]], starts: list[float]) -> dict[str, Any]:
    """The figures BENCHMARKS.json keeps: every round, and the medians the table shows."""
    def arm_values(arm: str, field: str) -> list[float]:
        return [float(r[arm][field]) for r in rounds]

    ratios = [r["agent"]["cpu_per_1000"] / r["pyspy"]["cpu_per_1000"] for r in rounds]
    # startup is a fixed cost that a long-lived sidecar pays once
    steady = [((r["agent"]["cpu_s"] - r["agent"]["startup_cpu_s"]) / r["agent"]["samples"])
              / ((r["pyspy"]["cpu_s"] - r["pyspy"]["startup_cpu_s"]) / r["pyspy"]["samples"])
              for r in rounds]
    wire_summary = {}
    for name, windows in wire.items():
        sizes = {field: per_sample(windows, field)
                 for field in ("batch_bytes", "gzip_bytes", "pprof_gz_bytes")}
        wire_summary[name] = {
            field: {"first": first, "steady": later} for field, (first, later) in sizes.items()}
        wire_summary[name]["stacks_per_window"] = [w["stacks"] for w in windows]
    # py-spy's start-up: a short run's CPU less what bare py-spy spends sampling as long
    pyspy_per_s = common.median([r["pyspy"]["cpu_s"] / params.seconds for r in rounds])
    startup_s = common.median(starts) - pyspy_per_s * PYSPY_START_SAMPLING_S
    agent_own_per_s = common.median([(r["agent"]["main_cpu_s"] - r["agent"]["startup_cpu_s"])
                                     / params.seconds for r in rounds])
    roles = {role for r in rounds for role in r["agent"].get("threads_ms_per_s", {})}
    by_thread = {role: common.median([r["agent"].get("threads_ms_per_s", {}).get(role, 0.0)
                                      for r in rounds]) for role in roles}
    return {
        "params": asdict(params), "rate_hz": RATE_HZ, "rounds": rounds,
        "pyspy_start_runs_cpu_s": starts, "pyspy_startup_cpu_s": startup_s,
        "pyspy_cpu_per_s": pyspy_per_s, "agent_main_cpu_per_s": agent_own_per_s,
        "agent_threads_ms_per_s": dict(sorted(by_thread.items(), key=lambda kv: -kv[1])),
        "agent_window_s": AGENT_WINDOW_S,
        "cpu_ratio": ratios, "cpu_ratio_without_startup": steady,
        "agent_cpu_per_1000": arm_values("agent", "cpu_per_1000"),
        "pyspy_cpu_per_1000": arm_values("pyspy", "cpu_per_1000"),
        "agent_peak_rss_mb": [v * MIB / MB for v in arm_values("agent", "peak_rss_mib")],
        "wire_windows": wire, "wire": wire_summary,
    }


def markdown(result: dict[str, Any]) -> str:
    """Sections 2 and 3 of BENCHMARKS.md."""
    return "\n".join(cost_section(result) + [""] + wire_section(result))


def cost_section(result: dict[str, Any]) -> list[str]:
    params, rounds = result["params"], result["rounds"]
    rows = [("samples", "samples", ".0f"), ("CPU s (startup included)", "cpu_s", ".2f"),
            ("CPU s per 1000 samples", "cpu_per_1000", ".3f"),
            ("startup CPU s, to the ready line", "startup_cpu_s", ".2f"),
            ("main process CPU s (py-spy children excluded)", "main_cpu_s", ".2f"),
            ("peak RSS MiB, process and children", "peak_rss_mib", ".1f"),
            ("peak RSS MiB, main process", "peak_main_rss_mib", ".1f"),
            ("peak RSS MiB, py-spy processes", "peak_pyspy_rss_mib", ".1f"),
            ("peak USS MiB, main process (its own pages)", "peak_main_uss_mib", ".1f"),
            ("target CPU s (what the target still got)", "target_cpu_s", ".2f")]
    lines = ["## 2. Agent cost",
             "",
             f"{len(rounds)} round(s) of {params['seconds']:g} s per arm at {result['rate_hz']} Hz, "
             "arm order alternating; one CPU-bound target throughout. Agent: default flags, "
             "shipping to a real collector on loopback (the collector's CPU is not counted). "
             "Median over rounds (range).",
             "", "| | Pyrometer agent (with its py-spy children) | bare `py-spy record` |",
             "|---|---|---|"]
    for label, field, fmt in rows:
        agent = [float(r["agent"][field]) for r in rounds]
        bare = [float(r["pyspy"][field]) for r in rounds]
        lines.append(f"| {label} | {common.cell(agent, fmt)} | {common.cell(bare, fmt)} |")
    ratio, steady = result["cpu_ratio"], result["cpu_ratio_without_startup"]
    rss_mb = result["agent_peak_rss_mb"]
    # The goals table at the top judges this row (the start-up amortised over an hour, the
    # main process's RSS); these lines give the round's own figures beside it and judge
    # nothing, so that no second, older target contradicts it.
    lines += ["", f"- Agent CPU per 1000 samples against bare py-spy's: "
              f"**{common.cell(ratio, '.2f')}x** with the one-off start-up counted in the "
              f"{params['seconds']:g} s round, {common.cell(steady, '.2f')}x without it; the "
              "goals table judges it with the start-up spread over an hour of samples.",
              f"- Agent peak RSS, the agent process and its py-spy children together: "
              f"**{common.cell(rss_mb, '.1f')} MB** (10^6 bytes; shared library pages "
              "included). The goals table judges the agent's main process alone; its own "
              "pages, its USS, are in the table above."]
    if "pyspy_startup_cpu_s" in result:
        lines += _extra_cpu(result)
    return lines


def _extra_cpu(result: dict[str, Any]) -> list[str]:
    """Where the agent's CPU beyond bare py-spy's goes, per second of a round."""
    startup, window = result["pyspy_startup_cpu_s"], result["agent_window_s"]
    bare, own = result["pyspy_cpu_per_s"], result["agent_main_cpu_per_s"]
    restarts = startup / window
    runs = result["pyspy_start_runs_cpu_s"]
    return [
        f"- Where the agent's CPU beyond bare py-spy's goes, per second (medians): "
        f"**py-spy's start-ups**, one per {window:g} s profile window where bare py-spy "
        f"starts once: {startup * 1e3:.1f} ms of CPU each ({len(runs)} run{'s' * (len(runs) != 1)} of "
        f"`py-spy record -d {PYSPY_START_SAMPLING_S}` took "
        f"{common.cell([r * 1e3 for r in runs], '.1f')} ms, less {PYSPY_START_SAMPLING_S} s "
        f"of bare py-spy's sampling), {restarts * 1e3:.2f} ms a second, "
        f"{restarts / bare:.0%} of bare py-spy's {bare * 1e3:.1f} ms a second; and the "
        f"**agent's own process** after its start-up (the 1 Hz process and host sampler, "
        f"the event loop, gRPC's threads, shipping): {own * 1e3:.2f} ms a second, "
        f"{own / bare:.0%}. py-spy writes its samples only when it exits, so each window "
        f"is a py-spy of its own; a longer `--window` pays the start-up less often, and "
        f"the data arrives that much later."] + _by_thread(result)


def _by_thread(result: dict[str, Any]) -> list[str]:
    """The agent's own process, thread by thread (agent_threads.py)."""
    by_thread = result.get("agent_threads_ms_per_s")
    if not by_thread:  # a run before the breakdown, or py-spy could not attach
        return []
    return ["", "The agent's own process after its start-up, thread by thread (CPU from each "
            "thread's schedstat over the round, threads named by `py-spy dump` at its end; "
            "medians over rounds, so they need not add up to the total above):", "",
            "| agent thread | ms of CPU a second |", "|---|---:|"] + [
        f"| {role} | {ms:.2f} |" for role, ms in by_thread.items() if ms >= 0.005]


def wire_section(result: dict[str, Any]) -> list[str]:
    params = result["params"]
    lines = ["## 3. Bytes on the wire",
             "",
             f"Bytes per sample of {params['windows']} windows of {params['period_s']:g} s per "
             "target, encoded by the agent's own sampler and encoder; the same windows as "
             "gzipped pprof (what Pyroscope's and Cloud Profiler's agents send). First window "
             "= the stream's first batch, which carries the dictionary; steady = median of "
             "the later ones.",
             "", "| target (distinct stacks per window) | | Pyrometer batch, gzip (on the wire) "
             "| Pyrometer batch, uncompressed | gzipped pprof | Pyrometer / pprof |",
             "|---|---|---|---|---|---|"]
    verdicts = []
    for name, figures in result["wire"].items():
        stacks = figures["stacks_per_window"]
        for phase in ("first", "steady"):
            ours, pprof = figures["gzip_bytes"][phase], figures["pprof_gz_bytes"][phase]
            lines.append(f"| {name} ({min(stacks)}–{max(stacks)}) | {phase} | {ours:.3f} | "
                         f"{figures['batch_bytes'][phase]:.3f} | {pprof:.3f} | {ours / pprof:.2f} |")
            if phase == "steady":
                verdicts.append(ours / pprof)
    # per program when row 1 made its whole-interval runs (full size); else its one upload
    measured = {name: upload for name, upload in
                (result.get("pyroscope_wire_by_program") or {}).items() if upload}
    if not measured and result.get("pyroscope_wire"):
        measured = {"busy": result["pyroscope_wire"]}
    if measured:
        lines += ["", "Pyroscope's Python SDK itself, measured in row 1 on the same programs (its "
                  "uploads to a local sink; HTTP headers excluded): "
                  f"{next(iter(measured.values()))['format']}.", "",
                  "| target | uploads | samples | bytes | bytes per sample | Pyrometer steady / Pyroscope |",
                  "|---|---|---|---|---|---|"]
        for name, upload in measured.items():
            ours = result["wire"].get(name, {}).get("gzip_bytes", {}).get("steady")
            versus = f"{ours / upload['bytes_per_sample']:.2f}" if ours and upload["samples"] else "–"
            lines.append(f"| {name} | {upload['uploads']} | {upload['samples']} | {upload['bytes']} | "
                         f"{upload['bytes_per_sample']:.3f} | {versus} |")
    worst = max(verdicts) if verdicts else float("nan")
    lines += ["", f"- Target: at most half the bytes of gzipped pprof for the same windows. "
              f"Steady state, worst target: {worst:.2f}x, "
              f"**{common.verdict(worst, 0.5, at_most=True)}**. The first window carries every "
              "string, frame and stack once, as pprof does in each upload, so it is near pprof's "
              "size; a stream pays it once per connection, and later windows send ids only."]
    if worst > 0.5:
        lines += ["- What bounds it: a program whose windows keep meeting stacks the stream has "
                  "not sent yet pays for each new stack's own frames (after the prefix it shares "
                  "with an earlier stack) and for one row per distinct stack; when most stacks "
                  "are seen once per window, rows approach samples. What would move it: longer "
                  "windows (more repeats per row), or a stream-level dictionary that outlives a "
                  "reconnect."]
    return lines


if __name__ == "__main__":
    sys.exit(common.main(__doc__, measure, markdown))
