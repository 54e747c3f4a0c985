"""What the agent's own process spends its CPU on, thread by thread (row 2).

Each thread's CPU comes from /proc/<pid>/task/<tid>/schedstat, in nanoseconds: psutil's
per-thread times tick at 10 ms, and the 1 Hz sampler's share of a 45 s round is a few
dozen of those. A thread is labelled by what it does: Python's names come from
`py-spy dump` (the kernel names every Python thread "python"), gRPC core names its own.
The threads are read every poll of the round, so one that ends within it (asyncio's
waitpid thread of each py-spy that exits) still counts, as ENDED, up to its last poll.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bench import common
from pyrometer.agent.stacks.sampler import find_pyspy

Snapshot = dict[int, tuple[str, int]]  # tid -> (kernel name, CPU ns so far)

# Python thread names (their prefix, before any number) -> what the thread does
_PYTHON_ROLES = {
    "MainThread": "event loop: windows encoded and shipped, gRPC aio, the recorders' supervision",
    "pyrometer-process-sampler": "process and host sampler, 1 Hz /proc reads",
    "asyncio_": "asyncio's executor: py-spy's output read and parsed, GPU readings",
    "asyncio-waitpid-": "asyncio's waitpid threads, one per live py-spy",
}
_POLLER = "gRPC aio poller"  # Thread-N (_poll_wrapper)
# kernel names of the threads gRPC core starts
_NATIVE_ROLES = dict.fromkeys(("event_engine", "grpc_global_tim", "lifeguard"),
                              "gRPC core: event engine, timer, lifeguard")
ENDED = "threads that ended within the interval"
_DUMP_THREAD = re.compile(r'^Thread (?:0x[0-9a-fA-F]+|(\d+))[^"]*"([^"]*)"', re.MULTILINE)


def snapshot(pid: int) -> Snapshot:
    """CPU so far of every thread of `pid` (a thread gone meanwhile is left out)."""
    out: Snapshot = {}
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir() if tasks.exists() else ():
        try:
            comm = (task / "comm").read_text().strip()
            run_ns = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[int(task.name)] = (comm, run_ns)
    return out


def python_names(pid: int) -> dict[int, str]:
    """tid -> Python thread name, from `py-spy dump`; empty where py-spy cannot attach."""
    try:
        dump = subprocess.run([find_pyspy(), "dump", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {int(tid): name for tid, name in _DUMP_THREAD.findall(dump) if tid}


def role(comm: str, python: str | None) -> str:
    """What a thread does, from its Python name where py-spy gave one, else its kernel name."""
    if python is not None:
        if python.endswith("(_poll_wrapper)"):
            return _POLLER
        return common.thread_role(python, _PYTHON_ROLES)
    return _NATIVE_ROLES.get(comm, f"{comm} (native)")


class ThreadWatch:
    """Every thread of a process, read at the start and at each `poll`: what each used
    between its first and last reading."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.first = snapshot(pid)
        self.seen = dict(self.first)  # each thread's last reading, ended ones included
        self.alive = set(self.first)

    def poll(self) -> None:
        now = snapshot(self.pid)
        self.seen.update(now)
        self.alive = set(now)

    def breakdown(self, names: dict[int, str], seconds: float) -> dict[str, float]:
        """Milliseconds of CPU a second per role, busiest first; `names` (tid -> Python
        thread name) labels the threads alive at the last poll, and those that ended
        count as ENDED."""
        per_role: dict[str, float] = {}
        for tid, (comm, run_ns) in self.seen.items():
            used_ns = run_ns - self.first.get(tid, (comm, 0))[1]
            label = role(comm, names.get(tid)) if tid in self.alive else ENDED
            per_role[label] = per_role.get(label, 0.0) + used_ns / 1e6 / seconds
        return dict(sorted(per_role.items(), key=lambda kv: -kv[1]))
