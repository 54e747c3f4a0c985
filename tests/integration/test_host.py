"""Process and host sampling: the pure delta core, PSI parsing, and the sampler against a
real pre-fork process tree (a parent that forks two CPU-burning workers).

Nothing sleeps for a fixed time: targets print a ready line, and sampler runs stop from
inside the emit callbacks once the condition under test holds (with a deadline).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench import sampler_tick
from pyrometer.agent.host import sampler as host_sampler
from pyrometer.agent.host.readings import (
    HostSnapshot,
    ProcessSnapshot,
    Psi,
    advance,
    host_delta,
    process_delta,
)
from pyrometer.agent.host.sampler import (
    ProcessSampler,
    parse_psi,
    read_psi,
    snapshot_host,
    snapshot_process,
    thread_counters,
)
from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import HostReading, ProcessReading
from pyrometer.agent.target.find import Target

PREFORK = """
import os, signal, sys
# the kernel reaps the workers, so a killed worker vanishes instead of lingering as a zombie
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
workers = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        x = 0
        while True:
            x += 1
    workers.append(pid)
print("ready", *workers, flush=True)
sys.stdin.read()
"""
SECOND = 1_000_000_000
Readings = tuple[list[ProcessReading], list[HostReading]]


# --- pure core ---------------------------------------------------------------------------

def snap(pid: int = 10, created: float = 100.0, t: float = 0.0, user: float = 0.0,
         system: float = 0.0, vol: int = 0, invol: int = 0) -> ProcessSnapshot:
    return ProcessSnapshot(pid=pid, create_time=created, time_ns=int(t * SECOND) + 7,
                           mono_ns=int(t * SECOND), cpu_user_s=user, cpu_system_s=system,
                           rss_bytes=4096, threads=3, ctx_voluntary=vol, ctx_involuntary=invol)


def test_process_delta_is_cores_and_counts_over_the_interval() -> None:
    reading = process_delta(snap(t=1.0, user=2.0, system=1.0, vol=10, invol=5),
                            snap(t=1.5, user=2.25, system=1.5, vol=14, invol=5))
    assert reading == ProcessReading(time_ns=int(1.5 * SECOND) + 7, pid=10, interval_s=0.5,
                                     cpu_user=0.5, cpu_system=1.0, rss_bytes=4096, threads=3,
                                     ctx_switches_voluntary=4, ctx_switches_involuntary=0)


def test_no_reading_without_a_baseline_of_the_same_process() -> None:
    assert process_delta(None, snap(t=1.0)) is None
    # the same pid, started again: its counters restarted, so no (negative) delta
    assert process_delta(snap(t=1.0, user=50.0, vol=900), snap(created=101.0, t=2.0)) is None
    assert process_delta(snap(t=1.0), snap(t=1.0)) is None


def test_advance_forgets_exited_processes_and_keys_by_create_time() -> None:
    baselines, readings = advance({}, [snap(pid=1, t=0.0), snap(pid=2, t=0.0)])
    assert readings == [] and set(baselines) == {(1, 100.0), (2, 100.0)}
    baselines, readings = advance(baselines, [snap(pid=1, t=1.0, user=0.5),
                                              snap(pid=2, created=150.0, t=1.0)])
    assert [(r.pid, r.cpu_user) for r in readings] == [(1, 0.5)]
    assert set(baselines) == {(1, 100.0), (2, 150.0)}


def test_host_delta_is_busy_share_of_all_cpus() -> None:
    first = HostSnapshot(time_ns=5, mono_ns=0, cpu_busy_s=10.0, cpu_total_s=100.0, cpu_count=2,
                         memory_available_bytes=1, memory_total_bytes=2, load1=0.5)
    second = replace(first, time_ns=SECOND + 5, mono_ns=SECOND, cpu_busy_s=10.5,
                     cpu_total_s=102.0, psi=Psi(cpu_some=1.5, io_full=0.0))
    assert host_delta(None, first) is None
    reading = host_delta(first, second)
    assert reading is not None and reading.cpu_pct == 25.0 and reading.time_ns == SECOND + 5
    assert (reading.psi_cpu_some, reading.psi_io_full, reading.psi_memory_some) == (1.5, 0.0, None)


# --- PSI ---------------------------------------------------------------------------------

def test_parse_psi() -> None:
    both = ("some avg10=1.50 avg60=0.89 avg300=3.19 total=300337529\n"
            "full avg10=0.25 avg60=0.00 avg300=0.00 total=12\n")
    assert parse_psi(both) == {
        "some_avg10": 1.5, "some_avg60": 0.89, "some_avg300": 3.19, "some_total": 300337529.0,
        "full_avg10": 0.25, "full_avg60": 0.0, "full_avg300": 0.0, "full_total": 12.0,
    }
    assert parse_psi("some avg10=2.00 avg60=0.00 avg300=0.00 total=0\n") == {
        "some_avg10": 2.0, "some_avg60": 0.0, "some_avg300": 0.0, "some_total": 0.0}
    malformed = "garbage\nsome avg10=abc avg60=1.5 =3 avg300 total=\nhalf avg10=9\n\n"
    assert parse_psi(malformed) == {"some_avg60": 1.5}
    assert parse_psi("") == {}


def test_read_psi_tolerates_missing_and_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "cpu").write_text("some avg10=3.00 avg60=0 avg300=0 total=0\n")
    (tmp_path / "memory").write_text("some avg10=1.25 avg60=0 avg300=0 total=0\n"
                                     "full avg10=0.50 avg60=0 avg300=0 total=0\n")
    (tmp_path / "io").mkdir()  # reading it fails: as good as absent
    assert read_psi(str(tmp_path)) == Psi(cpu_some=3.0, memory_some=1.25, memory_full=0.5)
    assert read_psi(str(tmp_path / "absent")) == Psi()


@pytest.mark.parametrize("interval_s, ticks_per_read", [(1.0, 2), (0.5, 4), (5.0, 1)])
def test_psi_is_read_once_per_kernel_update_and_repeated_between(
        tmp_path: Path, interval_s: float, ticks_per_read: int) -> None:
    # the kernel moves PSI's averages every 2 s: a tick in between repeats the last read
    sampler = ProcessSampler(interval_s, psi_root=str(tmp_path))
    seen = []
    for tick in range(2 * ticks_per_read + 1):
        (tmp_path / "cpu").write_text(f"some avg10={tick}.00 avg60=0 avg300=0 total=0\n")
        _, host = sampler._tick(lambda: None)
        if host is not None:  # the first tick only takes the baselines
            seen.append(host.psi_cpu_some)
    expected = [float(tick - tick % ticks_per_read) for tick in range(1, 2 * ticks_per_read + 1)]
    assert seen == expected


# --- the sampler against real processes --------------------------------------------------

@pytest.fixture
def prefork(tmp_path: Path) -> Iterator[tuple[int, list[int]]]:
    """A parent with two busy workers, in a session of its own so teardown kills them all."""
    script = tmp_path / "prefork.py"
    script.write_text(textwrap.dedent(PREFORK))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        word, *workers = proc.stdout.readline().split()
        assert word == "ready"
        yield proc.pid, [int(pid) for pid in workers]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def watched(pid: int, create_time: float | None = None) -> Callable[[], Target]:
    """What the agent hands the sampler: the target by pid and start time."""
    target = Target(pid, "", psutil.Process(pid).create_time() if create_time is None
                    else create_time)
    return lambda: target


def sample(sampler: ProcessSampler, target: Callable[[], Target | None],
           until: Callable[[list[ProcessReading], list[HostReading]], bool],
           timeout_s: float = 15.0) -> Readings:
    """Run the sampler until ``until`` holds after a tick (the host reading ends each tick)."""
    procs: list[ProcessReading] = []
    hosts: list[HostReading] = []
    stop = asyncio.Event()

    def on_host(reading: HostReading) -> None:
        hosts.append(reading)
        if until(procs, hosts):
            stop.set()

    async def main() -> None:
        await asyncio.wait_for(sampler.run(target, procs.append, on_host, stop),
                               timeout_s)

    asyncio.run(main())
    return procs, hosts


def by_pid(readings: list[ProcessReading], pid: int) -> list[ProcessReading]:
    return [r for r in readings if r.pid == pid]


@pytest.mark.integration
def test_reads_parent_and_workers_and_a_killed_worker_vanishes(
    prefork: tuple[int, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    parent, (victim, survivor) = prefork
    killed_after: list[int] = []  # number of host readings when the victim was killed

    def until(procs: list[ProcessReading], hosts: list[HostReading]) -> bool:
        if not killed_after and all(len(by_pid(procs, p)) >= 2 for p in (parent, victim, survivor)):
            os.kill(victim, signal.SIGKILL)
            killed_after.append(len(hosts))
        return bool(killed_after) and len(hosts) >= killed_after[0] + 3

    caplog.set_level(logging.DEBUG, logger="pyrometer.agent")
    procs, hosts = sample(ProcessSampler(0.2), watched(parent), until)

    assert {r.pid for r in procs} == {parent, victim, survivor}
    for worker in (victim, survivor):
        assert sum(r.cpu_user for r in by_pid(procs, worker)) > 0
    for reading in procs:
        assert 0.1 < reading.interval_s < 2.0 and reading.rss_bytes > 0 and reading.threads >= 1
        assert reading.ctx_switches_voluntary >= 0 and reading.ctx_switches_involuntary >= 0
        assert reading.cpu_user >= 0 and reading.cpu_system >= 0
    # one tick of grace for the kill to land; from then on the victim is never reported
    late = hosts[killed_after[0]].time_ns
    assert not [r for r in by_pid(procs, victim) if r.time_ns > late]
    assert [r for r in by_pid(procs, survivor) if r.time_ns > late]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


FORK_ON_DEMAND = """
import os, signal, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
print("ready", flush=True)
for line in sys.stdin:  # each line: fork one more busy worker and say its pid
    pid = os.fork()
    if pid == 0:
        x = 0
        while True:
            x += 1
    print(pid, flush=True)
"""


@pytest.mark.integration
def test_the_tree_is_listed_every_few_ticks_and_a_new_worker_is_found_by_the_next_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    listings: list[int] = []  # host readings so far at each listing of the tree
    hosts_seen: list[HostReading] = []
    real_list_tree = host_sampler.list_tree

    def counting(pid: int, complain: Callable[[str, BaseException], None]) -> list[psutil.Process]:
        listings.append(len(hosts_seen))
        return real_list_tree(pid, complain)

    monkeypatch.setattr(host_sampler, "list_tree", counting)
    script = tmp_path / "forker.py"
    script.write_text(textwrap.dedent(FORK_ON_DEMAND))
    parent = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert parent.stdout is not None and parent.stdin is not None
        assert parent.stdout.readline().split() == ["ready"]
        forked: list[tuple[int, int]] = []  # (worker pid, host readings when it was forked)

        def until(procs: list[ProcessReading], hosts: list[HostReading]) -> bool:
            hosts_seen[:] = hosts
            if len(hosts) == 3 and not forked:  # listed at the first tick, not since
                parent.stdin.write("fork\n")  # type: ignore[union-attr]
                parent.stdin.flush()  # type: ignore[union-attr]
                forked.append((int(parent.stdout.readline()), len(hosts)))  # type: ignore[union-attr]
            return bool(forked) and any(r.pid == forked[0][0] for r in procs)

        procs, hosts = sample(ProcessSampler(0.1), watched(parent.pid), until, timeout_s=60)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    # sampling stopped at the tick that first read the worker: found by the next listing
    # (at most RELIST_TICKS ticks on), read from the tick after (the first is its baseline)
    assert len(hosts) - forked[0][1] <= host_sampler.RELIST_TICKS + 1
    assert listings[0] == 0 and len(listings) <= len(hosts) // host_sampler.RELIST_TICKS + 2


def test_a_quiet_host_is_not_listed_again_until_a_process_starts(
    prefork: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    listings: list[int] = []
    real_list_tree = host_sampler.list_tree

    def counting(pid: int, complain: Callable[[str, BaseException], None]) -> list[psutil.Process]:
        listings.append(pid)
        return real_list_tree(pid, complain)

    on_host = {"pids": frozenset({"1", "2"})}
    monkeypatch.setattr(host_sampler, "list_tree", counting)
    monkeypatch.setattr(host_sampler, "host_pids", lambda: on_host["pids"])
    monkeypatch.setattr(host_sampler, "FULL_RELIST_TICKS", 30)
    sampler, target = ProcessSampler(1.0), watched(prefork[0])
    for _ in range(25):  # ticks run by hand: no thread, no clock
        readings, _ = sampler._tick(target)
    assert len(listings) == 1  # the first tick's
    assert {r.pid for r in readings} == {prefork[0], *prefork[1]}
    on_host["pids"] |= {"3"}  # a process started somewhere on the host
    for _ in range(host_sampler.RELIST_TICKS):
        sampler._tick(target)
    assert len(listings) == 2
    for _ in range(30):  # nothing new on the host: only the listing every 30 ticks
        sampler._tick(target)
    assert len(listings) == 3


def test_the_agent_takes_the_targets_processes_from_the_samplers_last_tick(
    prefork: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyrometer.agent.config import AgentConfig
    from pyrometer.agent.run import Agent

    parent, workers = prefork
    target = watched(parent)
    sampler = ProcessSampler(1.0)
    assert sampler.tree is None
    sampler._tick(target)  # ticks run by hand: no thread, no clock
    assert sampler.tree is not None and sampler.tree[0] is target()
    assert sampler.tree[1][0] == parent and set(sampler.tree[1]) == {parent, *workers}
    agent = Agent(AgentConfig("127.0.0.1:9", "svc", parent, None, "i", ()), target())
    agent.processes = sampler

    def no_scan(self: psutil.Process, recursive: bool = False) -> list[psutil.Process]:
        raise AssertionError("listed the host's processes")

    with monkeypatch.context() as patch:
        patch.setattr(psutil.Process, "children", no_scan)
        assert agent.target_pids() == {parent, *workers}
    # a target the sampler has not read yet (a successor, say): the host is listed
    agent.target = Target(parent, "", psutil.Process(parent).create_time())
    assert agent.target_pids() == {parent, *workers}
    impostor = watched(parent, create_time=psutil.Process(parent).create_time() - 60)
    sampler._tick(impostor)  # a tick that reads no process clears what it read
    assert sampler.tree is None


@pytest.mark.integration
def test_a_pid_now_held_by_another_process_or_by_none_gives_no_process_readings(
    prefork: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    parent, _ = prefork
    listings: list[int] = []
    real_list_tree = host_sampler.list_tree

    def counting(pid: int, complain: Callable[[str, BaseException], None]) -> list[psutil.Process]:
        listings.append(pid)
        return real_list_tree(pid, complain)

    monkeypatch.setattr(host_sampler, "list_tree", counting)
    # the same pid, another start time: what a reused pid looks like to the sampler
    impostor = watched(parent, create_time=psutil.Process(parent).create_time() - 60)
    procs, hosts = sample(ProcessSampler(0.1), impostor, lambda _, h: len(h) >= 3)
    assert procs == [] and len(hosts) >= 3
    assert listings == [parent]  # the other process's tree was listed once, not every tick
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    exited = watched(gone.pid)
    gone.wait()
    procs, hosts = sample(ProcessSampler(0.1), exited, lambda _, h: len(h) >= 3)
    assert procs == [] and len(hosts) >= 3


@pytest.mark.integration
def test_readings_reach_the_loop_thread_and_none_after_run_returns(
    prefork: tuple[int, list[int]],
) -> None:
    calls: list[tuple[str, int]] = []  # (kind, thread) of each emit
    stop = asyncio.Event()

    def on_host(reading: HostReading) -> None:
        calls.append(("host", threading.get_ident()))
        if sum(kind == "host" for kind, _ in calls) >= 3:
            stop.set()

    async def main() -> tuple[int, int]:
        sampler = ProcessSampler(0.05)
        await asyncio.wait_for(sampler.run(
            watched(prefork[0]), lambda _: calls.append(("process", threading.get_ident())),
            on_host, stop), 15)
        returned = len(calls)
        for _ in range(3):  # run whatever the ticker handed the loop before it was joined
            await asyncio.sleep(0)
        return returned, threading.get_ident()

    returned, loop_thread = asyncio.run(main())
    assert {thread for _, thread in calls} == {loop_thread}
    assert {kind for kind, _ in calls} == {"process", "host"}
    assert len(calls) == returned
    assert not [t for t in threading.enumerate() if t.name == "pyrometer-process-sampler"]


@pytest.mark.integration
def test_host_readings_are_sane_without_a_target() -> None:
    procs, hosts = sample(ProcessSampler(0.2), lambda: None, lambda _, h: len(h) >= 2)
    assert procs == []
    for host in hosts:
        assert 0.0 <= host.cpu_pct <= 100.0 and host.cpu_count == psutil.cpu_count()
        assert 0 < host.memory_available_bytes <= host.memory_total_bytes and host.load1 >= 0
        assert (host.psi_cpu_some is not None) == os.path.exists("/proc/pressure/cpu")
    assert 0 < hosts[1].time_ns - hosts[0].time_ns < 2 * SECOND


@pytest.mark.integration
def test_a_failing_consumer_is_logged_once_and_sampling_goes_on(
    prefork: tuple[int, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyrometer.agent")
    calls: list[ProcessReading] = []
    stop = asyncio.Event()

    def broken(reading: ProcessReading) -> None:
        calls.append(reading)
        if len(calls) >= 3:  # three ticks: the first failure did not end the loop
            stop.set()
        raise RuntimeError("consumer broke")

    async def main() -> None:
        sampler = ProcessSampler(0.2)
        await asyncio.wait_for(sampler.run(watched(prefork[0]), broken, lambda _: None, stop), 15)

    asyncio.run(main())
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "consumer broke" in warnings[0].getMessage()


def test_snapshot_of_an_exited_or_zombie_process_is_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    proc = psutil.Process(child.pid)
    assert snapshot_process(proc, 1, 1) is not None
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped: a zombie
    assert proc.status() == psutil.STATUS_ZOMBIE
    assert snapshot_process(proc, 1, 1) is None
    child.wait()
    assert snapshot_process(proc, 1, 1) is None


# a command name with spaces and parentheses, as /proc/PID/stat shows it: "pid (name) S ..."
ODD_NAME = """
import sys, threading
open("/proc/self/comm", "w").write("a) b (c) d")
threading.Thread(target=sys.stdin.read, daemon=True).start()
def spin():
    while True:
        sum(range(10_000))
threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not host_sampler.LINUX_PROC, reason="reads Linux's /proc")
def test_a_process_read_from_proc_agrees_with_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    child = subprocess.Popen([sys.executable, "-c", ODD_NAME], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        proc = psutil.Process(child.pid)
        assert proc.name() == "a) b (c) d"
        before, rss_before = proc.cpu_times(), proc.memory_info().rss
        snap = snapshot_process(proc, 1, 2)
        after, rss_after = proc.cpu_times(), proc.memory_info().rss
        assert snap is not None and snap.pid == child.pid and (snap.time_ns, snap.mono_ns) == (1, 2)
        assert snap.create_time == proc.create_time()
        assert snap.threads == proc.num_threads() == 3
        assert before.user <= snap.cpu_user_s <= after.user  # it spins: user time only grows
        assert before.system <= snap.cpu_system_s <= after.system
        assert min(rss_before, rss_after) - 2**20 <= snap.rss_bytes <= max(rss_before, rss_after) + 2**20
        with monkeypatch.context() as patch:  # where /proc is not Linux's: psutil reads it all
            patch.setattr(host_sampler, "LINUX_PROC", False)
            by_psutil = snapshot_process(proc, 1, 2)
        assert by_psutil is not None and by_psutil.threads == 3 and by_psutil.run_wait_s is None
        assert by_psutil.cpu_user_s >= snap.cpu_user_s
    finally:
        _stop(child)


@pytest.mark.skipif(not host_sampler.LINUX_PROC, reason="reads Linux's /proc")
def test_host_values_read_from_proc_agree_with_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    before, vm = psutil.cpu_times(), psutil.virtual_memory()
    snap = snapshot_host(1, 2)
    after = psutil.cpu_times()

    def busy_total(times: Any) -> tuple[float, float]:
        total = sum(times) - times.guest - times.guest_nice
        return total - times.idle - times.iowait, total

    (busy0, total0), (busy1, total1) = busy_total(before), busy_total(after)
    tick = 1 / host_sampler.CLOCK_TICKS  # psutil sums each field's seconds, this the ticks
    assert busy0 - tick <= snap.cpu_busy_s <= busy1 + tick
    assert total0 - tick <= snap.cpu_total_s <= total1 + tick
    assert snap.memory_total_bytes == vm.total
    assert abs(snap.memory_available_bytes - vm.available) < 0.05 * vm.total
    with monkeypatch.context() as patch:
        patch.setattr(host_sampler, "LINUX_PROC", False)
        by_psutil = snapshot_host(1, 2)
    assert by_psutil.memory_total_bytes == vm.total and by_psutil.cpu_total_s >= total0


def test_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="positive"):
        ProcessSampler(0)


SPINNERS = """
import sys, threading
def spin():
    while True:
        sum(range(10_000))
for _ in range(3):
    threading.Thread(target=spin, daemon=True).start()
print("spinning", flush=True)
sys.stdin.read()
"""


def _spinners(cpu: int | None = None) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", SPINNERS], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    if cpu is not None:  # every thread of it on one CPU: they queue there for it
        for tid in os.listdir(f"/proc/{child.pid}/task"):
            os.sched_setaffinity(int(tid), {cpu})
    assert child.stdout is not None and child.stdout.readline().strip() == "spinning"
    if cpu is not None:  # the spinners started after the first pin inherit it; pin again
        for tid in os.listdir(f"/proc/{child.pid}/task"):
            os.sched_setaffinity(int(tid), {cpu})
    return child


def _stop(*children: subprocess.Popen[str]) -> None:
    for child in children:
        child.kill()
        child.wait()


def test_context_switches_count_every_thread_not_the_main_one_alone() -> None:
    # three spinning worker threads, the main thread blocked on stdin: psutil's
    # num_ctx_switches() reads the main thread's counters only, which barely move
    child = _spinners()
    try:
        proc = psutil.Process(child.pid)
        deadline = time.monotonic() + 60
        while True:  # the spinners take the GIL from each other: switches pile up
            summed = thread_counters(child.pid)
            assert summed is not None
            main = proc.num_ctx_switches()
            if summed.voluntary + summed.involuntary >= 50 + 5 * (main.voluntary + main.involuntary):
                break
            assert time.monotonic() < deadline, (summed, main)
            time.sleep(0.2)
        snap = snapshot_process(proc, 1, 1)
        assert snap is not None
        assert snap.ctx_voluntary + snap.ctx_involuntary >= summed.voluntary + summed.involuntary
    finally:
        _stop(child)
    assert thread_counters(child.pid) is None  # gone: no task directory


def _task(root: Path, tid: int, schedstat: str | None, voluntary: int, involuntary: int) -> None:
    task = root / "7" / "task" / str(tid)
    task.mkdir(parents=True, exist_ok=True)
    (task / "status").write_text(f"Name:\tx\nvoluntary_ctxt_switches:\t{voluntary}\n"
                                 f"nonvoluntary_ctxt_switches:\t{involuntary}\n")
    if schedstat is not None:
        (task / "schedstat").write_text(schedstat + "\n")


def test_a_thread_that_has_not_run_since_keeps_its_switches_without_a_status_read(
        tmp_path: Path) -> None:
    _task(tmp_path, 1, "500 30 4", 10, 2)
    _task(tmp_path, 2, "900 70 6", 20, 3)
    first = thread_counters(7, str(tmp_path))
    assert first is not None and (first.voluntary, first.involuntary) == (30, 5)
    assert first.run_wait_s == pytest.approx(100e-9)
    # thread 2's status changes, its schedstat does not: it has not been on a CPU since,
    # so its status is not read again (the changed file proves it); thread 1 ran
    _task(tmp_path, 1, "800 30 5", 11, 2)
    _task(tmp_path, 2, "900 70 6", 99, 99)
    second = thread_counters(7, str(tmp_path), first)
    assert second is not None and (second.voluntary, second.involuntary) == (31, 5)
    # once thread 2 has run, its status is read; without the last counters, every status
    _task(tmp_path, 2, "950 70 7", 99, 99)
    third = thread_counters(7, str(tmp_path), second)
    assert third is not None and (third.voluntary, third.involuntary) == (110, 101)
    assert thread_counters(7, str(tmp_path)) == third
    # a kernel without schedstat: every status, every time, and no run-queue wait
    for tid in (1, 2):
        (tmp_path / "7" / "task" / str(tid) / "schedstat").unlink()
    bare = thread_counters(7, str(tmp_path), third)
    assert bare is not None and (bare.voluntary, bare.involuntary, bare.run_wait_s) == (110, 101, None)


def test_thread_counters_from_the_last_call_agree_with_a_fresh_read() -> None:
    # idle threads (blocked on stdin) read through the last call's counters, and a
    # spinning one re-read: the sums are those of reading every status
    # the sampler benchmark's target: 7 idle threads and a spinning one beside the main
    child = subprocess.Popen([sys.executable, "-c", sampler_tick.TARGET, "8"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        last = thread_counters(child.pid)
        for _ in range(5):
            cached = thread_counters(child.pid, last=last)
            fresh = thread_counters(child.pid)
            assert cached is not None and fresh is not None and last is not None
            # the idle threads agree exactly; the spinner's counts only grow between reads
            assert last.voluntary <= cached.voluntary <= fresh.voluntary
            assert last.involuntary <= cached.involuntary <= fresh.involuntary
            assert len(cached.threads) == len(fresh.threads) == 9
            idle = [tid for tid, state in fresh.threads.items() if state == last.threads.get(tid)]
            assert len(idle) >= 7  # the main thread may wake; the other seven sleep
            assert all(cached.threads[tid] == fresh.threads[tid] for tid in idle)
            last = cached
            time.sleep(0.05)
    finally:
        _stop(child)


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/schedstat"),
                    reason="the kernel keeps no schedstat")
def test_run_queue_wait_grows_when_another_process_takes_the_cpu() -> None:
    # the target on one CPU with a neighbour spinning on that same CPU: its running
    # thread waits in the run queue about half the time, whatever else the host does
    cpu = min(os.sched_getaffinity(0))
    target = _spinners(cpu)
    try:
        first = thread_counters(target.pid)
        assert first is not None and first.run_wait_s is not None
        neighbour = _spinners(cpu)
        try:
            deadline = time.monotonic() + 60
            while True:
                now = thread_counters(target.pid)
                assert now is not None and now.run_wait_s is not None
                if now.run_wait_s - first.run_wait_s >= 0.5:
                    break
                assert time.monotonic() < deadline, (first, now)
                time.sleep(0.2)
        finally:
            _stop(neighbour)
    finally:
        _stop(target)


def test_process_delta_gives_run_queue_wait_per_second() -> None:
    def snap(mono_s: float, wait: float | None) -> ProcessSnapshot:
        return ProcessSnapshot(pid=1, create_time=1.0, time_ns=0, mono_ns=round(mono_s * 1e9),
                               cpu_user_s=0, cpu_system_s=0, rss_bytes=1, threads=2,
                               ctx_voluntary=0, ctx_involuntary=0, run_wait_s=wait)

    reading = process_delta(snap(1, 3.0), snap(3, 4.5))
    assert reading is not None and reading.run_queue_wait == 0.75
    unknown = process_delta(snap(1, None), snap(3, 4.5))
    assert unknown is not None and unknown.run_queue_wait is None
