"""Process and host sampling: the target, its workers, the host and Linux PSI, at 1 Hz.

The thin I/O shell around agent/host/readings.py: psutil and /proc reads, done in a
thread of the sampler's own because they block, turned into readings by the pure core. Every tick
reads the target and all its descendants (the workers of a pre-fork server such as
gunicorn, uvicorn --workers or torchrun; listed every few ticks, see RELIST_TICKS) and
the host. Nothing raises out of the loop: a process that exits between being listed and
being read is simply not reported, and any other failure is logged (once per kind,
then at debug level) and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

from pyrometer.agent.host.readings import (
    HostSnapshot,
    ProcessKey,
    ProcessSnapshot,
    Psi,
    advance,
    host_delta,
    parse_psi,
)
from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import HostReading, Nanos, ProcessReading

__all__ = ["FULL_RELIST_TICKS", "PSI_ROOT", "RELIST_TICKS", "ProcessSampler", "Watched",
           "host_pids", "list_tree", "parse_psi", "read_psi", "snapshot_all", "snapshot_host"]

log = logging.getLogger("pyrometer.agent.host.sampler")
PSI_ROOT = "/proc/pressure"
Complain = Callable[[str, BaseException], None]
JOIN_TIMEOUT_S = 10.0  # a tick stuck in a /proc read does not hold up the agent's exit


class Watched(Protocol):
    """The process the sampler reads (agent/target/find.py's Target is one): its pid,
    and its start time, which tells it from a later process that reuses the pid."""

    @property
    def pid(self) -> int: ...

    @property
    def create_time(self) -> float: ...


def _read_pressure(path: str) -> dict[str, float]:
    try:
        return parse_psi(_read_bytes(path).decode())
    except (OSError, UnicodeDecodeError):  # no PSI (old kernel, container, psi=0): not an error
        return {}


def read_psi(root: str = PSI_ROOT) -> Psi:
    """The host's PSI avg10 percentages from ``root``/{cpu,memory,io}; None per missing file."""
    cpu, memory, io = (_read_pressure(f"{root}/{name}") for name in ("cpu", "memory", "io"))
    return Psi(
        cpu_some=cpu.get("some_avg10"),
        memory_some=memory.get("some_avg10"), memory_full=memory.get("full_avg10"),
        io_some=io.get("some_avg10"), io_full=io.get("full_avg10"),
    )


@dataclass(frozen=True, slots=True)
class ThreadCounters:
    """Cumulative counters of a process summed over its threads."""

    voluntary: int  # context switches
    involuntary: int
    run_wait_s: float | None  # time runnable but waiting for a CPU; None: no schedstat
    # each thread's schedstat run time and slices, with the switches its status gave:
    # what the next call needs to know which threads have not run since (see below)
    threads: dict[str, tuple[int, int, int, int]] = field(default_factory=dict, compare=False)


def thread_counters(pid: int, proc_root: str = "/proc",
                    last: ThreadCounters | None = None) -> ThreadCounters | None:
    """Context switches and run-queue wait summed over every thread of `pid`.

    psutil's num_ctx_switches() reads /proc/PID/status, which counts the main thread
    only: for a server whose main thread sits in accept() while worker threads serve,
    it said 1 switch a second and 0 preemptions on a host running full (the workers'
    own counters held hundreds). Each thread's counts are in /proc/PID/task/TID/status,
    and the time it waited in a run queue (runnable, no CPU free) is the second field
    of its schedstat: the target's own CPU delay, which PSI gives only for the whole
    host or cgroup. None when the task directory cannot be read (not Linux, another
    user's process). A thread that exits between the listing and its read is left out
    of this tick's sums, so an interval's delta can come out low, never negative
    (process_delta clamps).

    The status file is the dearer read (the kernel writes some 55 lines of it), and a
    model server's threads are mostly idle: a thread whose schedstat run time and slice
    count are what `last` (this process's previous call) saw has not been on a CPU
    since, so it cannot have switched, and its switches from then are used without
    reading its status. (A switch out is the end of a slice that ran, and the time it
    ran shows in the run time.) A sampler tick of a process with 63 idle threads beside
    a spinning one took 0.48-0.56 ms where it took 1.30-1.39 ms reading every status
    (medians of 300 ticks 30 ms apart, the two ways interleaved in one process, two runs).
    """
    try:
        tasks = os.listdir(f"{proc_root}/{pid}/task")
    except OSError:
        return None
    known = last.threads if last is not None else {}
    seen: dict[str, tuple[int, int, int, int]] = {}
    voluntary = involuntary = 0
    wait_ns: int | None = None
    for tid in tasks:
        task = f"{proc_root}/{pid}/task/{tid}"
        try:  # run ns, wait ns, slices
            run, wait, slices = (int(v) for v in _read_bytes(f"{task}/schedstat").split()[:3])
        except (OSError, ValueError):  # no schedstat (a kernel without it): status only
            run = wait = slices = -1
        before = known.get(tid)
        if run >= 0 and before is not None and before[:2] == (run, slices):
            vol, invol = before[2], before[3]
        else:
            try:
                vol, invol = _switches(_read_bytes(f"{task}/status"))
            except (OSError, ValueError, IndexError):
                continue
        if run >= 0:
            seen[tid] = (run, slices, vol, invol)
            wait_ns = (wait_ns or 0) + wait
        voluntary += vol
        involuntary += invol
    return ThreadCounters(voluntary, involuntary, None if wait_ns is None else wait_ns / 1e9,
                          seen)


def _switches(status: bytes) -> tuple[int, int]:
    """(voluntary, involuntary) context switches from a /proc/.../status file."""
    voluntary = involuntary = 0
    for line in status.splitlines():
        if line.startswith(b"voluntary_ctxt_switches:"):
            voluntary = int(line.split()[1])
        elif line.startswith(b"nonvoluntary_ctxt_switches:"):
            involuntary = int(line.split()[1])
    return voluntary, involuntary


# Each tick's counters come from one read of /proc/PID/stat per process (and its
# threads' status and schedstat, see thread_counters), and /proc/stat's first line and
# /proc/meminfo for the host, parsed here rather than by psutil. At 1 Hz every read runs
# with cold caches, and there a tick of one process and the host took 1.19 ms of CPU
# through psutil (oneshot()'s stat, statm and status reads, cpu_times(),
# virtual_memory()) and 0.92 ms this way: medians of 10 ticks 0.3 s apart, timed with
# time.thread_time_ns(), in two alternating runs. (statm was read as well until its RSS
# was taken from stat, where it is the same number.) psutil still lists the tree,
# supplies each process's start time (read once, when its Process is made) and reads
# everything where /proc is not Linux's.
LINUX_PROC = os.path.exists("/proc/self/stat")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if LINUX_PROC else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if LINUX_PROC else 4096
READ_CHUNK = 65536  # more than any file the sampler reads: one read gets it all


def _read_bytes(path: str) -> bytes:
    """The whole file, by os.open and os.read: four system calls (open, a read, the read
    that finds its end, close), where open(path, "rb").read() makes eight (it also
    fstats, asks whether it is a terminal and seeks, twice). Every tick reads a dozen
    /proc files, and each read this way took about 5 µs against 8 µs that way (four
    /proc files, medians of 200 reads each 10 ms apart, in process)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def snapshot_process(proc: psutil.Process, time_ns: Nanos, mono_ns: Nanos,
                     proc_root: str = "/proc", threads: dict[int, ThreadCounters] | None = None,
                     ) -> ProcessSnapshot | None:
    """Counters of one process, or None when it has exited (or is a zombie awaiting reaping).

    `threads`, when given, holds each process's last thread counters by pid, for
    thread_counters to skip the threads that have not run since; updated in place.
    Raises OSError (or psutil.Error, without Linux's /proc) when it cannot be read."""
    if not LINUX_PROC:
        return _snapshot_by_psutil(proc, time_ns, mono_ns)
    pid = proc.pid
    try:
        stat = _read_bytes(f"{proc_root}/{pid}/stat")
    except (FileNotFoundError, ProcessLookupError):  # gone since it was listed
        return None
    # the fields after the command name, which may itself hold spaces and parentheses:
    # state, ppid, ... utime (14th of the line), stime (15th), num_threads (20th), rss
    # (24th, in pages: the kernel's get_mm_rss(), the very number statm's second field
    # and psutil's memory_info().rss give, so statm is not read as well)
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None
    summed = thread_counters(pid, proc_root, threads.get(pid) if threads is not None else None)
    if threads is not None and summed is not None:
        threads[pid] = summed
    if summed is not None:
        voluntary, involuntary = summed.voluntary, summed.involuntary
    else:  # no task directory to read (another user's process): the main thread's own
        try:
            voluntary, involuntary = proc.num_ctx_switches()
        except psutil.NoSuchProcess:
            return None
    return ProcessSnapshot(
        pid=pid, create_time=proc.create_time(), time_ns=time_ns, mono_ns=mono_ns,
        cpu_user_s=int(fields[11]) / CLOCK_TICKS, cpu_system_s=int(fields[12]) / CLOCK_TICKS,
        rss_bytes=int(fields[21]) * PAGE_SIZE, threads=int(fields[17]),
        ctx_voluntary=voluntary, ctx_involuntary=involuntary,
        run_wait_s=summed.run_wait_s if summed else None,
    )


def _snapshot_by_psutil(proc: psutil.Process, time_ns: Nanos, mono_ns: Nanos
                        ) -> ProcessSnapshot | None:
    try:
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            cpu = proc.cpu_times()
            voluntary, involuntary = proc.num_ctx_switches()
            return ProcessSnapshot(
                pid=proc.pid, create_time=proc.create_time(), time_ns=time_ns, mono_ns=mono_ns,
                cpu_user_s=cpu.user, cpu_system_s=cpu.system, rss_bytes=proc.memory_info().rss,
                threads=proc.num_threads(), ctx_voluntary=voluntary,
                ctx_involuntary=involuntary, run_wait_s=None,
            )
    except psutil.NoSuchProcess:  # ZombieProcess included: gone between listing and reading
        return None


def list_tree(pid: int, complain: Complain) -> list[psutil.Process]:
    """``pid`` and all its descendants; [] when it has gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    except psutil.Error as exc:
        complain("listing the target's processes", exc)
        return []


def snapshot_all(procs: list[psutil.Process], time_ns: Nanos, mono_ns: Nanos,
                 complain: Complain, threads: dict[int, ThreadCounters] | None = None,
                 ) -> list[ProcessSnapshot]:
    """Snapshots of those of ``procs`` that are still running (`threads`: see
    snapshot_process)."""
    snapshots = []
    for proc in procs:
        try:
            snap = snapshot_process(proc, time_ns, mono_ns, threads=threads)
        except (psutil.Error, OSError, ValueError, IndexError) as exc:  # e.g. another user's
            complain("reading a target process", exc)
            continue
        if snap is not None:
            snapshots.append(snap)
    return snapshots


def snapshot_host(time_ns: Nanos, mono_ns: Nanos, psi_root: str = PSI_ROOT,
                  proc_root: str = "/proc", *, cpu_count: int | None = None,
                  psi: Psi | None = None) -> HostSnapshot:
    """Cumulative CPU times (busy counted as psutil.cpu_percent does) and current host values.

    ``cpu_count`` and ``psi``, when given, are used as they are (the sampler reads them
    less often than every tick, see ProcessSampler._host_values); otherwise read here."""
    busy, total = _cpu_busy_total(proc_root) if LINUX_PROC else _cpu_by_psutil()
    memory = _memory(proc_root) if LINUX_PROC else None
    if memory is None:  # not Linux, or a kernel before 3.14 (no MemAvailable)
        vm = psutil.virtual_memory()
        memory = vm.available, vm.total
    return HostSnapshot(
        time_ns=time_ns, mono_ns=mono_ns, cpu_busy_s=busy, cpu_total_s=total,
        cpu_count=cpu_count or psutil.cpu_count() or 1, memory_available_bytes=memory[0],
        memory_total_bytes=memory[1], load1=os.getloadavg()[0],
        psi=read_psi(psi_root) if psi is None else psi,
    )


def _cpu_busy_total(proc_root: str) -> tuple[float, float]:
    # "cpu  user nice system idle iowait irq softirq steal guest guest_nice", in clock
    # ticks; guest time is already part of user (and guest_nice of nice), so the total
    # stops at steal; idle and iowait are the not-busy part
    stat = _read_bytes(f"{proc_root}/stat")  # the kernel makes all of it for any read
    ticks = [int(v) for v in stat[:stat.find(b"\n")].split()[1:9]]
    total = sum(ticks)
    busy = total - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return busy / CLOCK_TICKS, total / CLOCK_TICKS


def _cpu_by_psutil() -> tuple[float, float]:
    times = psutil.cpu_times()
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0), total


def _memory(proc_root: str) -> tuple[int, int] | None:
    """(MemAvailable, MemTotal) in bytes from /proc/meminfo, as psutil.virtual_memory()
    gives them; None without MemAvailable."""
    available = total = None
    for line in _read_bytes(f"{proc_root}/meminfo").splitlines():
        if line.startswith(b"MemTotal:"):
            total = int(line.split()[1]) * 1024
        elif line.startswith(b"MemAvailable:"):
            available = int(line.split()[1]) * 1024
        if available is not None and total is not None:
            return available, total
    return None


# Listing the target's descendants scans every process on the host (psutil reads each
# /proc/PID/stat to find parents): 0.7 ms of a 1.1 ms tick with 72 processes, and it
# grows with the host's processes. So a tick reads the processes it knows, and the tree
# is listed again at once when the target changed or one of its processes has gone, and
# otherwise every RELIST_TICKS ticks if a process has started on the host since the last
# listing (a new pid in /proc: one directory read, where the listing opens a file per
# process): a worker that starts is read from at most RELIST_TICKS ticks later (5 s at
# the default 1 Hz), one that is replaced from the next tick. A new worker that took the
# pid of a process that ended since the last listing adds no pid; the listing every
# FULL_RELIST_TICKS ticks, whatever /proc holds, finds it.
RELIST_TICKS = 5
FULL_RELIST_TICKS = 60
# Two host values change far more slowly than a tick, and reading them cost a fifth of a
# tick on a 2-core VM (cold-cache reads; medians of 40 in process, each after a 50 ms
# pause): the CPU count (psutil.cpu_count() reads /proc/cpuinfo or sysfs, about 80 µs),
# read again with every full listing, and PSI's averages (three files, about 200 µs).
# The kernel recomputes those averages every 2 s (PSI_FREQ in kernel/sched/psi.c), so a
# 1 Hz reader saw each value twice; they are read once per PSI_PERIOD_S, and a reading in
# between repeats the last, at most one tick older than a fresh read would have been.
PSI_PERIOD_S = 2.0


def host_pids(proc_root: str = "/proc") -> frozenset[str]:
    """The pids /proc lists now, as its directory names; empty when it cannot be read."""
    try:
        return frozenset(name for name in os.listdir(proc_root) if name.isdigit())
    except OSError:
        return frozenset()


class ProcessSampler:
    """Reads the target's process tree and the host every ``interval_s``; see ``run``.

    Host CPU is computed from psutil.cpu_times() deltas of this sampler's own ticks,
    not psutil.cpu_percent(), whose between-calls state is global to the process.
    """

    def __init__(
        self, interval_s: float = 1.0, *, clock: Callable[[], Nanos] = time.time_ns,
        psi_root: str = PSI_ROOT,
    ) -> None:
        if not interval_s > 0:
            raise ConfigError(f"process sampling interval must be positive, not {interval_s}")
        self.interval_s = interval_s
        self._clock = clock
        self._psi_root = psi_root
        self._procs: dict[ProcessKey, ProcessSnapshot] = {}
        self._host: HostSnapshot | None = None
        self._complained: set[tuple[str, str]] = set()
        self._tree: list[psutil.Process] = []  # the target and its descendants, as last listed
        self._tree_root: int | None = None
        self._ticks_since_listed = 0
        self._ticks_since_checked = 0  # since /proc's pids were last compared, or the listing
        self._pids_at_listing: frozenset[str] = frozenset()  # /proc's pids at the last listing
        self._not_ours: Watched | None = None  # a target whose pid another process took
        self._psi_ticks = max(1, round(PSI_PERIOD_S / interval_s))
        self._host_ticks = 0  # host reads so far; the slow values are read on some of them
        self._cpu_count: int | None = None
        self._psi: Psi | None = None
        # each read process's last thread counters (see thread_counters), by pid
        self._threads: dict[int, ThreadCounters] = {}
        # the target of the last tick and the pids of its tree that tick read (the target
        # first), or None when it read none; replaced whole, so another thread may read it
        self.tree: tuple[Watched, tuple[int, ...]] | None = None

    async def run(
        self,
        target: Callable[[], Watched | None],
        emit_process: Callable[[ProcessReading], None],
        emit_host: Callable[[HostReading], None],
        stop: asyncio.Event,
    ) -> None:
        """Tick until ``stop`` is set: readings of the interval since the last tick.

        ``target`` is asked every tick, in the sampler's thread (None: no target right
        now, e.g. between a restart and re-attaching; host readings go on). A target
        that has exited, or whose pid now belongs to another process, gives no process
        readings. The first tick only takes baselines. Ticks keep to a grid; one that
        overruns is followed at once.

        The ticks run in a thread of their own, and only their readings come to the
        event loop (one call a tick). With each tick awaited on the loop
        (asyncio.wait_for for the pause, asyncio.to_thread for the blocking reads) the
        agent's loop thread used 1.4 ms of CPU a second against a CPU-bound target; with
        the ticks in a thread, 0.8 to 0.9 ms (each thread's /proc/PID/task/TID/schedstat
        over 50 s of a running agent). Row 2 of BENCHMARKS.md measures the whole agent.
        """
        loop = asyncio.get_running_loop()
        halt = threading.Event()

        def deliver(readings: list[ProcessReading], host: HostReading | None) -> None:
            if halt.is_set():
                return  # run() has returned: nobody is listening any more
            try:
                for reading in readings:
                    emit_process(reading)
                if host is not None:
                    emit_host(host)
            except Exception as exc:  # a consumer's fault does not stop the sampling
                self._complain("process sampling", exc)

        def send(readings: list[ProcessReading], host: HostReading | None) -> bool:
            try:
                loop.call_soon_threadsafe(deliver, readings, host)
                return True
            except RuntimeError:  # the loop has closed under us: stop ticking
                return False

        ticker = threading.Thread(target=self._ticks, args=(target, send, halt),
                                  name="pyrometer-process-sampler", daemon=True)
        ticker.start()
        try:
            await stop.wait()
        finally:
            halt.set()
        # a tick in progress finishes its reads; its readings are dropped (halt is set)
        await asyncio.to_thread(ticker.join, JOIN_TIMEOUT_S)

    def _ticks(
        self,
        target: Callable[[], Watched | None],
        send: Callable[[list[ProcessReading], HostReading | None], bool],
        halt: threading.Event,
    ) -> None:
        """The sampler thread: tick on a grid until ``halt`` is set."""
        next_tick = time.monotonic()
        while not halt.is_set():
            try:
                readings, host = self._tick(target)
            except Exception as exc:  # a background loop logs and carries on
                self._complain("process sampling", exc)
            else:
                if not send(readings, host):
                    return
            next_tick = max(next_tick + self.interval_s, time.monotonic())
            halt.wait(next_tick - time.monotonic())

    def _tick(self, target: Callable[[], Watched | None]
              ) -> tuple[list[ProcessReading], HostReading | None]:
        """One tick's reads, and the readings of the interval since the last one."""
        snapshots, host = self._read(target)
        self._procs, readings = advance(self._procs, snapshots)
        host_reading = host_delta(self._host, host) if host is not None else None
        self._host = host
        return readings, host_reading

    def _read(self, target: Callable[[], Watched | None]
              ) -> tuple[list[ProcessSnapshot], HostSnapshot | None]:
        watched = target()
        time_ns, mono_ns = self._clock(), time.monotonic_ns()
        snapshots = [] if watched is None else self._snapshot_tree(watched, time_ns, mono_ns)
        try:
            return snapshots, snapshot_host(time_ns, mono_ns, self._psi_root,
                                            **self._host_values())
        except Exception as exc:
            self._complain("reading host values", exc)
            return snapshots, None

    def _host_values(self) -> dict[str, Any]:
        """The slow host values for this tick's snapshot_host: fresh on the ticks that
        read them (see PSI_PERIOD_S), the last ones on the others."""
        tick, self._host_ticks = self._host_ticks, self._host_ticks + 1
        if tick % FULL_RELIST_TICKS == 0 or self._cpu_count is None:
            self._cpu_count = psutil.cpu_count() or 1
        if tick % self._psi_ticks == 0 or self._psi is None:
            self._psi = read_psi(self._psi_root)
        return {"cpu_count": self._cpu_count, "psi": self._psi}

    def _snapshot_tree(self, target: Watched, time_ns: Nanos, mono_ns: Nanos
                       ) -> list[ProcessSnapshot]:
        """Snapshots of the target and its descendants still running, listing them again
        only when RELIST_TICKS says so; none when the target itself is not running."""
        snapshots = self._read_tree(target, time_ns, mono_ns)
        self.tree = (target, tuple(snap.pid for snap in snapshots)) if snapshots else None
        return snapshots

    def _read_tree(self, target: Watched, time_ns: Nanos, mono_ns: Nanos
                   ) -> list[ProcessSnapshot]:
        if target is self._not_ours:
            return []
        pid = target.pid
        self._ticks_since_listed += 1
        self._ticks_since_checked += 1
        if self._must_list(pid):
            self._pids_at_listing = host_pids()
            self._tree, self._tree_root = list_tree(pid, self._complain), pid
            self._ticks_since_listed = self._ticks_since_checked = 0
            listed = {proc.pid for proc in self._tree}  # forget the processes gone since
            self._threads = {p: c for p, c in self._threads.items() if p in listed}
        snapshots = snapshot_all(self._tree, time_ns, mono_ns, self._complain, self._threads)
        if len(snapshots) < len(self._tree):  # one has gone: maybe replaced, look again
            self._tree_root = None
        # The root's own snapshot says whether the target still runs (it read the start
        # time anyway): asking psutil first took about 0.6 ms of CPU a tick with cold
        # caches, beside the snapshot's 1.0 ms (both through psutil, before the /proc
        # reads above made the snapshot cheaper still).
        root = snapshots[0] if snapshots else None
        if root is None or root.pid != pid or root.create_time != target.create_time:
            self._tree_root = None
            if root is not None and root.pid == pid:
                # another process holds the pid now: the target will not come back, and
                # that process's tree is not listed again every tick
                self._not_ours = target
            return []
        return snapshots

    def _must_list(self, pid: int) -> bool:
        """Whether this tick lists the target's tree again (see RELIST_TICKS)."""
        if pid != self._tree_root or self._ticks_since_listed >= FULL_RELIST_TICKS:
            return True
        if self._ticks_since_checked < RELIST_TICKS:
            return False
        self._ticks_since_checked = 0
        return not host_pids() <= self._pids_at_listing  # a process has started since

    def _complain(self, what: str, exc: BaseException) -> None:
        # once per kind of failure at warning level: at 1 Hz a lasting fault would flood the log
        kind = (what, type(exc).__name__)
        if kind in self._complained:
            log.debug("%s failed again: %s: %s", what, type(exc).__name__, exc)
            return
        self._complained.add(kind)
        expected = isinstance(exc, psutil.Error | OSError)  # no traceback for these
        log.warning("%s failed: %s: %s (repeats are logged at debug level)", what,
                    type(exc).__name__, exc, exc_info=None if expected else exc)
