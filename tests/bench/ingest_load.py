"""Collector ingest: sustained samples and batches per second from many agent streams.

A measurement, not a test (pytest does not collect it). Run from the repository root:

    .venv/bin/python tests/bench/ingest_load.py [--size tiny|full] [--json OUT]

Each level starts a fresh real collector (`pyrometer collector`, retention off so no
background delete competes) and load-generator processes (ingest_gen.py) that replay
realistic agent batches (ingest_workload.py: 1,000 samples over ~135 of 150 stacks
of depth 20-40 per 10 s window, plus 30 telemetry readings and 20 request records)
over real gRPC with gzip, one TCP connection and one stream per agent, each agent with
its own id and sequence from 1, the first batch carrying the dictionary. "closed" levels
keep 2 batches in flight per stream (the collector's saturation throughput; ack latency
there is queueing at saturation); the "paced" level sends each agent's batch every 10 s,
as real agents do, to measure ack latency at that offered load. The paced level runs
again with the collector's commit wait (--commit-delay-ms) set lower and higher than its
default, which shows what the default trades: collector CPU against ack latency. A
fleet of 100 paced agents runs twice, at 2 and at 200 requests a second each (a busy
model server): what the collector spends on request records is the difference. One
agent with 8 batches in flight, its shipper's window, is an agent draining its spool
after an outage: how fast its backlog moves alone, and beside the 1,000 paced agents
(a level of its own, not judged: the drain adds to the fleet's load).

Counting is by ack time, over a measured interval after a warm-up. CPU is psutil's for
the collector and the generators over that interval (they share the machine's cores;
what else ran is reported as "other"). Peak RSS is the collector's VmHWM. After the
load, the samples the collector's API reports must equal the samples acked, and the
request records and 1 Hz readings in its file those that the acked batches carried. On the
heaviest closed level a py-spy profile of the collector follows the measured interval
(so it does not perturb it), with the per-thread CPU split from /proc.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import duckdb
import psutil

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import common, ingest_profile  # noqa: E402
from bench.ingest_report import markdown  # noqa: E402
from bench.ingest_workload import DRAIN_IN_FLIGHT, REQUEST_RATE, WINDOW_NS, WINDOW_S  # noqa: E402
from pyrometer.collector.procs import Child, python_env  # noqa: E402

TITLE = "Collector ingest"
GENERATOR = Path(__file__).resolve().with_name("ingest_gen.py")
__all__ = ["TITLE", "measure", "markdown"]
# counters of the store under load, read at both ends of the measured interval
Probe = Callable[[], dict[str, float]]


@dataclass(frozen=True, slots=True)
class Level:
    """One load level: how many agent streams, how they send, for how long."""

    streams: int
    mode: str  # "closed" (saturate) or "paced" (one batch per period_s per stream)
    warm_s: float
    measure_s: float
    profile_s: float = 0.0  # py-spy the collector this long after the measured interval
    in_flight: int = 2  # closed: unacknowledged batches per stream
    period_s: float = 10.0  # paced: seconds between one stream's batches
    # the collector's --commit-delay-ms; None: its default (only such levels are judged)
    commit_delay_ms: float | None = None
    request_rate: int = REQUEST_RATE  # each agent's requests a second (only the default is judged)
    # paced: one more agent beside the fleet, draining its spool (8 in flight, closed);
    # such a level is not judged, its figures are the fleet's and the drain's apart
    drainer: bool = False
    decode_workers: int = 0  # the collector's --decode-workers (ingest/workers.py)

    @property
    def name(self) -> str:
        wait = "" if self.commit_delay_ms is None else f"-wait{self.commit_delay_ms:g}ms"
        busy = "" if self.request_rate == REQUEST_RATE else f"-req{self.request_rate}"
        window = "" if self.mode != "closed" or self.in_flight == 2 else f"-inflight{self.in_flight}"
        drain = "-drainer" if self.drainer else ""
        workers = f"-workers{self.decode_workers}" if self.decode_workers else ""
        return f"{self.mode}-{self.streams}{window}{wait}{busy}{drain}{workers}"

    def collector_flags(self) -> tuple[str, ...]:
        wait = () if self.commit_delay_ms is None else ("--commit-delay-ms", f"{self.commit_delay_ms:g}")
        return wait + (("--decode-workers", str(self.decode_workers)) if self.decode_workers else ())


LEVELS = {
    "tiny": [Level(2, "closed", 0.5, 2.0, profile_s=1.0), Level(2, "paced", 0.5, 1.5, period_s=0.25),
             Level(2, "paced", 0.5, 1.5, period_s=0.25, commit_delay_ms=5),
             Level(2, "paced", 0.5, 1.5, period_s=0.25, request_rate=20),
             Level(1, "closed", 0.5, 1.5, in_flight=DRAIN_IN_FLIGHT),
             Level(2, "paced", 0.5, 1.5, period_s=0.25, drainer=True),
             Level(2, "closed", 0.5, 2.0, decode_workers=1)],
    "full": [Level(10, "closed", 5, 30), Level(100, "closed", 5, 30),
             Level(1000, "closed", 5, 30, profile_s=15), Level(1000, "paced", 10, 30),
             Level(1000, "paced", 10, 30, commit_delay_ms=50),
             Level(1000, "paced", 10, 30, commit_delay_ms=200),
             Level(100, "paced", 10, 30), Level(100, "paced", 10, 30, request_rate=200),
             Level(1, "closed", 5, 30, in_flight=DRAIN_IN_FLIGHT),
             Level(1000, "paced", 10, 30, drainer=True),
             # the same fleets with a decode worker beside the collector
             Level(1000, "closed", 5, 30, decode_workers=1),
             Level(1000, "paced", 10, 30, decode_workers=1)],
}


class Generator:
    """One ingest_gen.py process: plan in, `ready` and `result` lines out."""

    def __init__(self, plan: dict[str, Any], log: Path) -> None:
        self._log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, str(GENERATOR)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=python_env(), start_new_session=True)
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        self._pump = threading.Thread(target=_pump, args=(self.proc.stdout, self._lines), daemon=True)
        self._pump.start()
        self._say(json.dumps(plan))

    def _say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str, timeout: float) -> dict[str, Any]:
        """The JSON after the next line's `word`; fails early if the process has exited."""
        deadline, line = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._pump.is_alive() and self._lines.empty():  # output ended
                    break
        if not line.startswith(word + " "):
            self.stop()
            tail = Path(self._log.name).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"load generator sent {line[:200]!r}, not {word!r}:\n{tail}")
        result: dict[str, Any] = json.loads(line[len(word) + 1:])
        return result

    def go(self, times: dict[str, float]) -> None:
        self._say("go " + json.dumps(times))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._log.close()


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


def busy_s() -> float:
    """CPU seconds all cores of the machine spent busy so far."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def snapshot(collectors: Sequence[int], generators: list[int]) -> dict[str, Any]:
    # thread ids are unique across processes, so the collectors' threads share one map
    threads = {tid: cpu for pid in collectors for tid, cpu in ingest_profile.thread_cpu(pid).items()}
    # a collector's CPU is its own and its decode workers' (ingest/workers.py)
    return {"at": time.monotonic(), "collector": sum(common.tree_cpu_s(p) for p in collectors),
            "generators": sum(common.process_cpu_s(p) for p in generators), "machine": busy_s(),
            "threads": threads}


def observe(collectors: Sequence[int], generators: list[int], times: dict[str, float],
            probe: Probe | None = None) -> dict[str, Any]:
    """CPU of everything over the measured interval, in cores (CPU seconds per second);
    "collector" is all of `collectors` together. `probe`'s counters, read at both ends
    of the interval, come back as their increase ("probe")."""
    time.sleep(max(0.0, times["from"] - time.monotonic()))
    before = snapshot(collectors, generators)
    counted = probe() if probe else {}
    time.sleep(max(0.0, times["to"] - time.monotonic()))
    after = snapshot(collectors, generators)
    counted = {k: v - counted[k] for k, v in probe().items()} if probe else {}
    wall = after["at"] - before["at"]
    cores = {k: (after[k] - before[k]) / wall for k in ("collector", "generators", "machine")}
    return {"wall_s": wall, "probe": counted,
            "collector_cpu_s": after["collector"] - before["collector"],
            "collector_cores": cores["collector"], "generator_cores": cores["generators"],
            "machine_cores": cores["machine"],
            "other_cores": cores["machine"] - cores["collector"] - cores["generators"],
            "threads": ingest_profile.thread_cpu_delta(before["threads"], after["threads"], wall)}


def peak_rss_mib(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return psutil.Process(pid).memory_info().rss / common.MIB


def plans(level: Level, addresses: Sequence[str], run_id: str, **extra: Any) -> list[dict[str, Any]]:
    """Split the level's streams over up to two generator processes (two cores here);
    stream i goes to collector i mod len(addresses). `extra` goes into every plan."""
    count = min(2, level.streams)
    shares = [level.streams // count + (i < level.streams % count) for i in range(count)]
    # Every batch's window is the 10 s before it is sent, as a real agent's: the collector's
    # common path. Windows on a timeline from some base (a fill's, `base_ns` in `extra`)
    # fall behind the profile rollups' watermark once compaction has run, and then every
    # commit also writes rollup rows for them (the late path: an agent's spool draining
    # after an outage); at 1,000 paced agents that path cost 5.9 CPU-s per 1M samples
    # where the common one costs 4.3.
    fleet = [{"addresses": list(addresses), "first_stream": sum(shares[:i]), "streams": n,
              "mode": level.mode, "in_flight": level.in_flight, "period_s": level.period_s,
              "base_ns": time.time_ns() - WINDOW_NS, "current": "base_ns" not in extra,
              "run_id": run_id, "request_rate": level.request_rate} | extra
             for i, n in enumerate(shares)]
    if not level.drainer:
        return fleet
    # the agent after the fleet's, with an agent's own window of batches in flight
    return fleet + [fleet[0] | {"first_stream": level.streams, "streams": 1, "mode": "closed",
                                "in_flight": DRAIN_IN_FLIGHT, "drainer": True}]


def drive(level: Level, collectors: Sequence[Child], work: Path,
          probe: Probe | None = None) -> dict[str, Any]:
    """Run the generators against `collectors` (agents spread over them) through warm-up,
    measure (see `observe` for `probe`) and profile (the first collector)."""
    run_id = uuid.uuid4().hex[:12]
    addresses = [c.ready.group("grpc") for c in collectors]
    plans_ = plans(level, addresses, run_id)
    generators = [Generator(plan, work / f"{level.name}-gen{i}.log") for i, plan in enumerate(plans_)]
    try:
        ready = [g.expect("ready", timeout=300) for g in generators]
        start = time.monotonic() + 0.2
        times = {"start": start, "from": start + level.warm_s,
                 "to": start + level.warm_s + level.measure_s,
                 "stop": start + level.warm_s + level.measure_s + level.profile_s}
        for g in generators:
            g.go(times)
        seen = observe([c.pid for c in collectors], [g.proc.pid for g in generators], times, probe)
        profile = None
        if level.profile_s:
            profile = profile_collector(collectors[0].pid, level.profile_s,
                                        work / f"{level.name}.raw")
        results = [g.expect("result", timeout=level.profile_s + 300) | {"drainer": p.get("drainer", False)}
                   for g, p in zip(generators, plans_, strict=True)]
    finally:
        for g in generators:
            g.stop()
    return {"ready": ready, "observed": seen, "profile": profile, "results": results}


def profile_collector(pid: int, seconds: float, out: Path) -> dict[str, Any] | None:
    """py-spy and per-thread CPU of the collector for `seconds` of continued load."""
    threads_before, began = ingest_profile.thread_cpu(pid), time.monotonic()
    try:
        spy = ingest_profile.start_pyspy(pid, seconds, out)
    except Exception as exc:  # no py-spy here: the profile is optional
        return {"error": str(exc)}
    _, err = spy.communicate(timeout=seconds + 60)
    wall, threads_after = time.monotonic() - began, ingest_profile.thread_cpu(pid)
    if spy.returncode != 0 or not out.exists():
        return {"error": f"py-spy exited {spy.returncode}: {err.decode(errors='replace')[-500:]}"}
    summary = ingest_profile.read_profile(out)
    names = summary.thread_names
    threads = ingest_profile.thread_cpu_delta(ingest_profile.relabel(threads_before, names),
                                              ingest_profile.relabel(threads_after, names), wall)
    return summary.as_dict() | {"threads_cpu": threads}


def run_level(level: Level, work: Path) -> dict[str, Any]:
    """One level on a fresh collector: the figures, the loss check and the peak RSS."""
    collector = common.start_collector(work, "--retention", "off", *level.collector_flags(),
                                       name=f"collector-{level.name}")
    try:
        driven = drive(level, [collector], work)
        stored = common.stored_samples(collector.ready.group("http"))
        peak = peak_rss_mib(collector.pid)
    finally:
        exit_code = collector.stop(signal.SIGTERM, timeout=60)
    db = work / f"collector-{level.name}.duckdb"
    return figures(level, driven, stored, peak, exit_code, db.stat().st_size if db.exists() else 0,
                   stored_records(db) if db.exists() else {})


# what every batch carries besides its samples: WINDOW_S readings of each kind at 1 Hz,
# and WINDOW_S * request_rate request records (ingest_workload.telemetry)
RECORD_KINDS = ("requests", "process", "host", "gpu")


def stored_records(db: Path) -> dict[str, int]:
    """Rows of each record kind in a stopped collector's file."""
    with duckdb.connect(str(db), read_only=True) as con:
        return {kind: con.execute(f"SELECT count(*) FROM {kind}").fetchone()[0]  # type: ignore[index]
                for kind in RECORD_KINDS}


def acked_records(level: Level, acked_batches: int) -> dict[str, int]:
    """The records of each kind in `acked_batches` batches of the level's workload."""
    per_batch = {"requests": WINDOW_S * level.request_rate} | {
        kind: WINDOW_S for kind in RECORD_KINDS if kind != "requests"}
    return {kind: acked_batches * per_batch[kind] for kind in RECORD_KINDS}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(level: Level, driven: dict[str, Any], stored: int, peak: float, exit_code: int,
            db_bytes: int, records: dict[str, int] | None = None) -> dict[str, Any]:
    """A level's figures; `stored`: the samples the API reported, `records`: each
    record kind's rows in the file (stored_records), None where they are not counted (the
    lake's levels, which check samples only)."""
    everyone, seen = driven["results"], driven["observed"]
    # the fleet's figures; the drainer's apart, and its batches in the loss check
    results = [r for r in everyone if not r.get("drainer")]
    drained = [r for r in everyone if r.get("drainer")]
    latencies = [lat for r in results for lat in r["latencies_ms"]]
    samples = sum(r["samples"] for r in results)
    acked = sum(r["acked_samples_total"] for r in everyone)
    errors = [e for r in everyone for e in r["errors"]]
    acked_batches = sum(r["acked_total"] for r in everyone)
    expected = acked_records(level, acked_batches)
    return {
        "level": asdict(level) | {"name": level.name},
        "batches_per_s": sum(r["batches"] for r in results) / seen["wall_s"],
        "samples_per_s": samples / seen["wall_s"],
        "requests_per_s": (sum(r["batches"] for r in results) * level.request_rate * WINDOW_S
                           / seen["wall_s"]),
        "ack_ms": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                   "max": max(latencies, default=float("nan"))},
        "collector_cpu_s_per_million": (seen["collector_cpu_s"] / samples * 1e6
                                        if samples and not drained else float("nan")),
        "drain": {"batches_per_s": sum(r["batches"] for r in drained) / seen["wall_s"],
                  "ack_p50_ms": percentile([x for r in drained for x in r["latencies_ms"]], 0.5)
                  } if drained else None,
        "observed": seen, "peak_rss_mib": peak, "db_mib": db_bytes / common.MIB,
        "connect_s": max(r["setup_s"] for r in driven["ready"]),
        "batch_bytes": {k: driven["ready"][0][k] for k in ("first_batch_bytes", "steady_batch_bytes")},
        "acked_samples": acked, "stored_samples": stored,
        "sent_batches": sum(r["sent_total"] for r in everyone),
        "acked_batches": acked_batches,
        "acked_records": expected if records is not None else {},
        "stored_records": records if records is not None else {},
        "duplicates": sum(r["duplicates"] for r in everyone), "errors": errors[:10],
        "lossless": (stored == acked and records in (None, expected) and not errors
                     and exit_code == 0),
        "collector_exit_code": exit_code, "profile": driven["profile"],
    }


def measure(size: str, work: Path) -> dict[str, Any]:
    """Every level of `size`, one after the other, each on its own collector."""
    began = time.monotonic()
    levels = [run_level(level, work) for level in LEVELS[size]]
    return {"size": size, "cpus": psutil.cpu_count(), "levels": levels,
            "elapsed_s": time.monotonic() - began}


if __name__ == "__main__":
    sys.exit(common.main(__doc__, measure, markdown))
