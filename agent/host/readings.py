"""Process and host readings from cumulative snapshots: the pure core of agent/host/sampler.py.

``process_delta`` and ``host_delta`` turn two snapshots into one reading of the interval
between them; ``parse_psi`` parses a /proc/pressure file. Processes are keyed by pid
*and* create time, so a reused pid starts afresh instead of yielding a negative delta.

A reading covers an interval, so the first snapshot of a process (or of the host) only
sets a baseline and emits nothing: a zero-delta reading would claim an idle second that
nobody measured. A worker that appears between two ticks is reported from its second tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pyrometer.agent.shared.model import NANOS_PER_SECOND, HostReading, Nanos, ProcessReading

ProcessKey = tuple[int, float]  # (pid, create_time): a restarted pid is a new key


def parse_psi(text: str) -> dict[str, float]:
    """Fields of one /proc/pressure file, e.g. ``{"some_avg10": 0.5, "full_total": 12.0}``.

    Lines other than ``some``/``full`` and fields that are not ``name=number`` are
    skipped rather than failing the whole file: a newer kernel may add fields.
    """
    fields: dict[str, float] = {}
    for line in text.splitlines():
        kind, _, rest = line.strip().partition(" ")
        if kind not in ("some", "full"):
            continue
        for item in rest.split():
            name, sep, value = item.partition("=")
            try:
                if sep and name:
                    fields[f"{kind}_{name}"] = float(value)
            except ValueError:
                continue
    return fields


@dataclass(frozen=True, slots=True)
class Psi:
    """The avg10 pressure percentages HostReading carries; None where not available."""

    cpu_some: float | None = None
    memory_some: float | None = None
    memory_full: float | None = None
    io_some: float | None = None
    io_full: float | None = None


@dataclass(frozen=True, slots=True)
class ProcessSnapshot:
    """Cumulative counters of one process at one instant (mono_ns times the interval)."""

    pid: int
    create_time: float
    time_ns: Nanos
    mono_ns: Nanos
    cpu_user_s: float  # the process's own time; reaped children are read on their own
    cpu_system_s: float
    rss_bytes: int
    threads: int
    ctx_voluntary: int
    ctx_involuntary: int
    run_wait_s: float | None = None  # cumulative, summed over its threads (schedstat)

    @property
    def key(self) -> ProcessKey:
        return (self.pid, self.create_time)


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """Cumulative host CPU times plus the instantaneous host values at one instant."""

    time_ns: Nanos
    mono_ns: Nanos
    cpu_busy_s: float  # summed over all CPUs
    cpu_total_s: float
    cpu_count: int
    memory_available_bytes: int
    memory_total_bytes: int
    load1: float
    psi: Psi = Psi()


def process_delta(prev: ProcessSnapshot | None, cur: ProcessSnapshot) -> ProcessReading | None:
    """The reading for the interval prev -> cur; None without a baseline of this very process."""
    if prev is None or prev.key != cur.key or cur.mono_ns <= prev.mono_ns:
        return None
    interval_s = (cur.mono_ns - prev.mono_ns) / NANOS_PER_SECOND
    return ProcessReading(
        time_ns=cur.time_ns, pid=cur.pid, interval_s=interval_s,
        # max(0, ...): counters are monotonic per process; clamp anyway, never report < 0
        cpu_user=max(0.0, cur.cpu_user_s - prev.cpu_user_s) / interval_s,
        cpu_system=max(0.0, cur.cpu_system_s - prev.cpu_system_s) / interval_s,
        rss_bytes=cur.rss_bytes, threads=cur.threads,
        ctx_switches_voluntary=max(0, cur.ctx_voluntary - prev.ctx_voluntary),
        ctx_switches_involuntary=max(0, cur.ctx_involuntary - prev.ctx_involuntary),
        run_queue_wait=None if cur.run_wait_s is None or prev.run_wait_s is None
        else max(0.0, cur.run_wait_s - prev.run_wait_s) / interval_s,
    )


def advance(
    previous: Mapping[ProcessKey, ProcessSnapshot], current: Iterable[ProcessSnapshot]
) -> tuple[dict[ProcessKey, ProcessSnapshot], list[ProcessReading]]:
    """New baselines (only processes seen now, so the dead are forgotten) and the readings."""
    baselines = {snap.key: snap for snap in current}
    readings = [r for key, snap in baselines.items() if (r := process_delta(previous.get(key), snap))]
    return baselines, readings


def host_delta(prev: HostSnapshot | None, cur: HostSnapshot) -> HostReading | None:
    """Host CPU busy % (all CPUs, 0-100) over prev -> cur, with cur's instantaneous values."""
    if prev is None or cur.mono_ns <= prev.mono_ns:
        return None
    total = cur.cpu_total_s - prev.cpu_total_s
    busy = cur.cpu_busy_s - prev.cpu_busy_s
    cpu_pct = min(100.0, max(0.0, 100.0 * busy / total)) if total > 0 else 0.0
    return HostReading(
        time_ns=cur.time_ns, cpu_pct=cpu_pct, cpu_count=cur.cpu_count,
        memory_available_bytes=cur.memory_available_bytes,
        memory_total_bytes=cur.memory_total_bytes, load1=cur.load1,
        psi_cpu_some=cur.psi.cpu_some, psi_memory_some=cur.psi.memory_some,
        psi_memory_full=cur.psi.memory_full, psi_io_some=cur.psi.io_some,
        psi_io_full=cur.psi.io_full,
    )

