"""The py-spy sampler against real target processes started from tmp_path.

Targets print a ready line once they run the code under test; the sampler itself
waits on py-spy's own ready line, so nothing here sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrometer.agent.shared.errors import ConfigError, TargetError
from pyrometer.agent.shared.model import Frame, ProfileWindow, SampleKey
from pyrometer.agent.stacks.recorder import classify_failure
from pyrometer.agent.stacks.sampler import (
    SamplerConfig,
    StackSampler,
    TargetExited,
    find_pyspy,
    remove_samples,
)

pytestmark = pytest.mark.integration
Targets = list[subprocess.Popen[str]]
FAST = SamplerConfig(period_s=1.5, lead_s=0.4)

BUSY = """
import sys, threading, os
def leaf_work():
    x = 0
    for i in range(20000):
        x += i
def middle():
    while True:
        leaf_work()
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
print("ready", flush=True)
middle()
"""

THREADS = """
import threading, time
def idle_wait():
    while True:
        time.sleep(0.5)
def spin():
    while True:
        sum(range(1000))
threading.Thread(target=idle_wait, name="sleeper", daemon=True).start()
print("ready", flush=True)
spin()
"""

PARENT = """
import subprocess, sys
code = "def child_work():\\n while True: sum(range(1000))\\nprint('up', flush=True)\\nchild_work()"
child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print("ready", child.pid, flush=True)
child.wait()
"""


def start_target(
    tmp_path: Path, source: str, name: str = "target.py"
) -> tuple[subprocess.Popen[str], str]:
    """Run ``source`` from tmp_path and wait (30 s at most) for its ready line."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=30):
            proc.kill()
            pytest.fail("target printed no ready line within 30 s")
    return proc, proc.stdout.readline()


@pytest.fixture
def targets() -> Iterator[Targets]:
    started: Targets = []
    yield started
    for proc in started:
        for child in (
            psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        ):
            child.kill()
        proc.kill()
        proc.wait()


async def collect(sampler: StackSampler, n: int) -> tuple[list[ProfileWindow], float]:
    """n full windows, then stop(): the windows and how long the final one took."""
    windows: list[ProfileWindow] = []
    asked = 0.0
    async for window in sampler.windows():
        windows.append(window)
        if len(windows) == n:
            asked = time.monotonic()
            await sampler.stop()
    return windows, time.monotonic() - asked


def frames_named(window: ProfileWindow, name: str) -> int:
    return sum(c for key, c in window.counts.items() if any(f.name == name for f in key.stack))


def test_windows_are_contiguous_complete_and_stop_quickly(tmp_path: Path, targets: Targets) -> None:
    proc, _ = start_target(tmp_path, BUSY)
    targets.append(proc)
    announced: list[int] = []  # when on_sampling was called (agent clock)
    sampler = StackSampler(FAST, proc.pid, on_sampling=lambda: announced.append(time.time_ns()))
    windows, final_s = asyncio.run(collect(sampler, 3))

    assert len(windows) == 4
    # once, as the first recorder samples (the first window starts then), not at handovers
    assert len(announced) == 1 and windows[0].start_ns <= announced[0] < windows[0].end_ns
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.end_ns == b.start_ns
    assert final_s < 5 and windows[-1].duration_ns < 2e9
    leaves = {f for w in windows for key in w.counts for f in key.stack if f.name == "leaf_work"}
    # lines 3-6 are leaf_work's: a sample taken as the call enters it (before the first
    # statement runs) reports the def line, 3, as Python 3.11's frame does then
    assert leaves and all(f.file == "target.py" and 3 <= f.line <= 6 for f in leaves)
    assert all(frames_named(w, "leaf_work") > 0.8 * w.total for w in windows[:3])
    elapsed_s = (windows[-1].end_ns - windows[0].start_ns) / 1e9
    total = sum(w.total for w in windows)
    # no double counting at handovers and no gaps: the whole run adds up to rate x time
    assert 0.85 * 100 * elapsed_s <= total <= 1.15 * 100 * elapsed_s, (total, elapsed_s)
    assert sampler.last_handover is not None and 0 <= sampler.last_handover.overlap_s < 1
    assert not any(w.idle_included or w.native or w.gil_only for w in windows)
    assert not [c for c in psutil.Process().children() if c.name() == "py-spy"]
    assert sampler.workdir is not None and not sampler.workdir.exists()


def test_threads_and_idle(tmp_path: Path, targets: Targets) -> None:
    proc, _ = start_target(tmp_path, THREADS)
    targets.append(proc)
    config = SamplerConfig(period_s=1.5, lead_s=0.4, threads=True, idle=True)
    windows, _ = asyncio.run(collect(StackSampler(config, proc.pid), 1))

    threads = {key.thread.split(" (")[0] for w in windows for key in w.counts}
    assert {"MainThread", "sleeper"} <= threads
    assert all(w.idle_included for w in windows)
    # idle stacks are in the counts: the sleeper is sampled about as often as the spinner
    assert frames_named(windows[0], "idle_wait") > 0.5 * frames_named(windows[0], "spin")


def test_idle_stacks_are_left_out_by_default(tmp_path: Path, targets: Targets) -> None:
    proc, _ = start_target(tmp_path, THREADS)
    targets.append(proc)
    windows, _ = asyncio.run(collect(StackSampler(FAST, proc.pid), 1))
    spin = frames_named(windows[0], "spin")
    # the sleeper counts only in the instants it runs (or waits for the GIL) between sleeps
    assert spin > 0 and frames_named(windows[0], "idle_wait") < 0.05 * spin


def test_subprocesses_give_worker_pids(tmp_path: Path, targets: Targets) -> None:
    proc, ready = start_target(tmp_path, PARENT)
    targets.append(proc)
    child_pid = int(ready.split()[1])
    config = SamplerConfig(period_s=1.5, lead_s=0.4, subprocesses=True)
    windows, _ = asyncio.run(collect(StackSampler(config, proc.pid), 1))
    pids = {
        key.pid
        for w in windows
        for key in w.counts
        if any(f.name == "child_work" for f in key.stack)
    }
    assert pids == {child_pid}


def test_target_exit_ends_with_a_last_window(tmp_path: Path, targets: Targets) -> None:
    proc, _ = start_target(tmp_path, BUSY)
    targets.append(proc)
    sampler = StackSampler(FAST, proc.pid)
    windows: list[ProfileWindow] = []

    async def run() -> None:
        async for window in sampler.windows():
            windows.append(window)
            assert proc.stdin is not None
            proc.stdin.close()  # the target exits when its stdin closes

    with pytest.raises(TargetExited, match=f"process {proc.pid} exited"):
        asyncio.run(run())
    assert len(windows) == 2 and windows[0].end_ns == windows[1].start_ns
    assert windows[0].total > 0


def test_a_killed_recorder_is_replaced(tmp_path: Path, targets: Targets) -> None:
    proc, _ = start_target(tmp_path, BUSY)
    targets.append(proc)
    sampler = StackSampler(FAST, proc.pid)
    windows: list[ProfileWindow] = []

    async def run() -> None:
        async for window in sampler.windows():
            windows.append(window)
            if len(windows) == 1:
                for child in psutil.Process().children():
                    if child.name() == "py-spy":
                        child.kill()
            else:
                await sampler.stop()

    asyncio.run(run())
    # the killed recorder's samples are lost: a gap, then windows carry on
    assert len(windows) == 3 and windows[1].start_ns > windows[0].end_ns
    assert windows[1].end_ns == windows[2].start_ns
    assert frames_named(windows[1], "leaf_work") > 0


def test_ctrl_c_to_the_process_group_ends_cleanly(tmp_path: Path, targets: Targets) -> None:
    proc, _ = start_target(tmp_path, BUSY)
    targets.append(proc)
    windows: list[ProfileWindow] = []

    async def run() -> None:
        async for window in StackSampler(FAST, proc.pid).windows():
            windows.append(window)
            for child in psutil.Process().children():
                if child.name() == "py-spy":  # what a terminal's Ctrl-C does to py-spy
                    child.send_signal(signal.SIGINT)

    asyncio.run(run())
    assert len(windows) == 2 and windows[0].end_ns == windows[1].start_ns


def run_first_window(pid: int, pyspy: list[str] | None = None) -> None:
    announced: list[bool] = []

    async def first() -> None:
        sampler = StackSampler(FAST, pid, pyspy=pyspy, on_sampling=lambda: announced.append(True))
        async for _ in sampler.windows():
            break

    try:
        asyncio.run(first())
    except TargetError:
        assert not announced  # a target that cannot be sampled is never announced
        raise
    assert announced == [True]


def test_no_such_pid() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with pytest.raises(TargetError, match=f"^no process with pid {dead.pid}$"):
        run_first_window(dead.pid)


def test_not_a_python_process(targets: Targets) -> None:
    proc = subprocess.Popen(["sleep", "100"], text=True)
    targets.append(proc)
    with pytest.raises(TargetError, match=rf"process {proc.pid} \(sleep\) is not a Python process"):
        run_first_window(proc.pid)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="needs root and setpriv to drop privileges",
)
def test_no_ptrace_permission(tmp_path: Path, targets: Targets) -> None:
    proc, _ = start_target(tmp_path, BUSY)
    targets.append(proc)
    unprivileged = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", find_pyspy()]
    with pytest.raises(TargetError, match="SYS_PTRACE") as err:
        run_first_window(proc.pid, pyspy=unprivileged)
    assert "\n" not in str(err.value)


def test_classify_failure_messages() -> None:
    gone = (
        "Error: Failed to get process executable name. Check that the process is running.\n"
        "Caused by:\n    0: No such file or directory (os error 2)"
    )
    denied = gone.replace(
        "No such file or directory (os error 2)", "Permission denied (os error 13)"
    )
    assert str(classify_failure(gone, 2**22 + 1)) == f"no process with pid {2**22 + 1}"
    assert "kernel.yama.ptrace_scope" in str(classify_failure(denied, os.getpid()))
    assert "is not a Python process" in str(
        classify_failure("Error: Failed to find python version from target process", os.getpid())
    )


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        SamplerConfig(period_s=1.0, lead_s=1.0)
    with pytest.raises(ConfigError):
        SamplerConfig(rate_hz=0)
    native = SamplerConfig(native=True, gil=True).pyspy_flags()
    assert "--nonblocking" not in native and {"--native", "--gil"} <= set(native)


KEYS = [SampleKey((Frame(f"f{i}", "x.py", i),)) for i in range(6)]


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=6), st.integers(0, 70_000))
def test_remove_samples_is_proportional_and_exact(values: list[int], n: int) -> None:
    counts = dict(zip(KEYS, values, strict=False))
    total = sum(values)
    after = remove_samples(counts, n)
    assert sum(after.values()) == total - min(n, total)
    for key, count in counts.items():
        removed = count - after.get(key, 0)
        assert 0 <= removed <= count
        assert abs(removed - min(n, total) * count / total) < 1
    assert remove_samples(counts, n) == after  # deterministic
