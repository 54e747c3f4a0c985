"""Where the collector's CPU goes under load, for the collector ingest benchmark.

Two views, because neither alone separates the stages. The kernel's per-thread CPU
(/proc) covers every thread, native ones included: the event loop (gRPC's Python
layer, decoding, the servicers), gRPC core's own threads (HTTP/2, inflating gzip),
and the commit worker with DuckDB's threads. py-spy, sampling only the Python threads
without pausing them, says which Python code the active time was spent in; native
work (DuckDB, protobuf's parser, Arrow) shows under the Python frame that called it.
Each py-spy sample is put in one stage by the first frame, from the leaf up, that
belongs to a known part (see `_owner`).
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import common
from pyrometer.agent.shared.model import Frame, SampleKey
from pyrometer.agent.stacks.parser import RawParser
from pyrometer.agent.stacks.sampler import find_pyspy

PYSPY_RATE_HZ = 100
TOP_FUNCTIONS = 12
# the collector module a frame's file belongs to (its path under collector/) -> its stage
_MODULE_STAGES = {
    "storage/duckdb/append.py": "build Arrow tables", "storage/duckdb/schema.py": "build Arrow tables",
    "storage/duckdb/backend.py": "DuckDB insert + commit",
    "ingest/decode.py": "decode profile + dictionary", "storage/batch.py": "decode profile + dictionary",
    "ingest/validate.py": "validate telemetry records", "ingest/commit.py": "group-commit bookkeeping",
    "metrics.py": "metrics", "agent_metrics.py": "metrics", "ingest/server.py": "servicer",
}
# gRPC's aio layer is Cython: it has no Python frames, so its time shows under the
# event loop's own frames
_LOOP = "asyncio loop + gRPC aio (Cython)"
# Python thread names (from py-spy) -> what the thread does in the collector; commits
# run one at a time on the default executor, whose threads are asyncio_0, asyncio_1, ...
_THREAD_ROLES = {"MainThread": "main: event loop, gRPC aio, decode",
                 "asyncio_": "commit worker: Arrow tables, DuckDB calls",
                 "Thread-1 (_poll_wrapper)": "gRPC aio poller"}


WORKER_ROLE = "decode worker processes: parse, validate, hand off"
# kernel thread names of threads without a Python name
_NATIVE_ROLES = {"event_engine": "gRPC core event engine (HTTP/2, gzip)",
                 "python": "DuckDB's worker threads, idle pool threads"}


def _role(python_name: str) -> str:
    return common.thread_role(python_name, _THREAD_ROLES)


def thread_cpu(pid: int, names: dict[int, str] | None = None) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every thread of `pid`: tid -> (name, seconds).

    The name is the Python thread's role where `names` (tid -> Python thread name, from
    py-spy) knows it, else the kernel's name (gRPC core names its threads; DuckDB's and
    idle pool threads are all "python").
    """
    names = names or {}
    out: dict[int, tuple[str, float]] = {}
    process = psutil.Process(pid)
    for thread in process.threads():
        try:
            comm = Path(f"/proc/{pid}/task/{thread.id}/comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        python = names.get(thread.id, "MainThread" if thread.id == pid else "")
        label = _role(python) if python else _NATIVE_ROLES.get(comm, comm)
        out[thread.id] = (label, thread.user_time + thread.system_time)
    for child in process.children(recursive=True):  # its decode workers, every thread
        try:
            for thread in child.threads():
                out[thread.id] = (WORKER_ROLE, thread.user_time + thread.system_time)
        except psutil.NoSuchProcess:
            continue
    return out


def relabel(snapshot: dict[int, tuple[str, float]], names: dict[int, str]) -> dict[int, tuple[str, float]]:
    """`snapshot` with the labels that `names` (from py-spy) gives its threads."""
    out = dict(snapshot)
    for tid, (_, cpu) in snapshot.items():
        if tid in names:
            python = names[tid]
            out[tid] = (_role(python), cpu)
    return out


def thread_cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                     seconds: float) -> list[dict[str, Any]]:
    """Cores used per thread name between two `thread_cpu` snapshots, busiest first.

    Threads of one name (gRPC core's pollers, DuckDB's workers) are summed; a thread
    that ended in between is missed, which these long-lived pools do not do.
    """
    cores: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for tid, (name, cpu) in after.items():
        cores[name] += (cpu - before.get(tid, (name, 0.0))[1]) / seconds
        count[name] += 1
    return [{"thread": name, "threads": count[name], "cores": round(value, 3)}
            for name, value in cores.most_common() if value >= 0.005]


def start_pyspy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy record of `pid` for `seconds`, raw format, all threads, never pausing it."""
    argv = [find_pyspy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
            "--rate", str(PYSPY_RATE_HZ), "--format", "raw", "--nonblocking", "--threads",
            "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _module(frame: Frame) -> str:
    return frame.file.rsplit("/", 1)[-1]


def _owner(frame: Frame) -> str | None:
    """The stage a frame belongs to, or None for a frame that only passes work on.

    py-spy shortens paths to what follows the sys.path entry (collector/ingest/decode.py,
    asyncio/events.py), so folders are matched as path components.
    """
    parts = frame.file.split("/")
    folders, module = parts[:-1], _module(frame)
    if "collector" in folders:
        under = "/".join(parts[len(parts) - parts[::-1].index("collector"):])
        if under in _MODULE_STAGES:
            return "protobuf parse" if frame.name == "parse_batch" else _MODULE_STAGES[under]
    if "grpc" in folders or "asyncio" in folders or module == "selectors.py":
        return _LOOP
    if "aiohttp" in folders:
        return "HTTP API"
    if "prometheus_client" in folders:
        return "metrics"
    return None


def stage(key: SampleKey) -> str:
    for frame in reversed(key.stack):
        owner = _owner(frame)
        if owner is not None:
            return owner
    return "other"


def _short(frame: Frame) -> str:
    parts = frame.file.split("/")
    return f"{frame.name} ({'/'.join(parts[-2:])})"


@dataclass(frozen=True, slots=True)
class Summary:
    samples: int
    stages: dict[str, float]  # share of sampled active time per stage
    top_self: list[tuple[str, float]]  # leaf functions by share of samples
    threads: dict[str, float]  # share per Python thread
    thread_names: dict[int, str]  # tid -> Python thread name

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "stages": self.stages,
                "top_self": [list(item) for item in self.top_self], "threads": self.threads,
                "thread_names": {str(tid): name for tid, name in self.thread_names.items()}}


def summarise(pairs: Iterable[tuple[SampleKey, int]]) -> Summary:
    """Shares by stage, by leaf function (self time) and by thread of py-spy's samples."""
    stages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    names: dict[int, str] = {}
    for key, count in pairs:
        stages[stage(key)] += count
        leaves[_short(key.stack[-1]) if key.stack else "(no Python frame)"] += count
        name, _, tid = key.thread.rpartition(" (")
        threads[name or "?"] += count
        if name and tid.rstrip(")").isdigit():
            names[int(tid.rstrip(")"))] = name
    total = sum(stages.values()) or 1

    def shares(counter: Counter[str], top: int | None = None) -> list[tuple[str, float]]:
        return [(name, round(n / total, 4)) for name, n in counter.most_common(top)]

    return Summary(sum(stages.values()), dict(shares(stages)), shares(leaves, TOP_FUNCTIONS),
                   dict(shares(threads)), names)


def read_profile(path: Path) -> Summary:
    """Summarise one `start_pyspy` output file."""
    return summarise(RawParser().parse_text(path.read_text(errors="replace")))
