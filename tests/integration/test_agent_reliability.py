"""The agent under stress, end to end: real `pyrometer agent` and collector processes,
real py-spy, a real target. Signals are real; readiness is a line in a log.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psutil
import pytest

from pyrometer.agent.shared.model import ProfileWindow
from pyrometer.agent.stacks import orphans
from pyrometer.agent.stacks.orphans import WORKDIR_PREFIX, reap_orphans
from pyrometer.agent.stacks.sampler import SamplerConfig, StackSampler, find_pyspy
from pyrometer.collector.procs import Child, python_env, start
from support import targets

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
WINDOW = re.compile(r"INFO pyrometer.agent: window ")
WINDOW_SAMPLES = re.compile(r"INFO pyrometer.agent: window [\d.]+ s: (\d+) samples")


class Rig:
    """The processes of one test, stopped (killed if need be) at its end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "rig.duckdb"
        self.spool = tmp / "spool"
        self.children: list[Child] = []
        (tmp / "target.py").write_text(targets.BUSY)
        self.target = self.add(start("target", [sys.executable, str(tmp / "target.py")],
                                     "target ready", tmp))

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def collector(self, grpc: str = "127.0.0.1:0") -> Child:
        argv = CLI + ["collector", "--db", str(self.db), "--grpc-listen", grpc,
                      "--http-listen", "127.0.0.1:0"]
        return self.add(start("collector", argv, r"ingest on (?P<grpc>\S+) ", self.tmp,
                              env=python_env()))

    def agent(self, collector: str, name: str = "agent") -> Child:
        argv = CLI + ["agent", "--collector", collector, "--service", "rel", "--pid",
                      str(self.target.pid), "--window", "1", "--gpu", "off",
                      "--requests-listen", "off", "--spool-dir", str(self.spool)]
        return self.add(start(name, argv, "profiling pid", self.tmp, env=python_env()))

    def windows(self) -> list[tuple[str, int, int, int]]:
        """(agent_id, seq, start_ns, end_ns) of every stored window, by start."""
        with duckdb.connect(str(self.db), read_only=True) as con:
            return [(a, int(s), int(b), int(e)) for a, s, b, e in con.execute(
                "SELECT DISTINCT agent_id, seq, start_ns, end_ns FROM samples ORDER BY start_ns"
            ).fetchall()]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    for child in reversed(rig.children):
        child.stop(signal.SIGKILL)


def wait_for(child: Child, pattern: re.Pattern[str] | str, count: int = 1,
             timeout: float = 60.0) -> None:
    """Until the child's log has `count` matches: readiness, not a sleep."""
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    deadline = time.monotonic() + timeout
    while len(regex.findall(child.output())) < count:
        assert child.proc.poll() is None, child.output()
        assert time.monotonic() < deadline, f"no {count}x {regex.pattern!r}:\n{child.output()}"
        time.sleep(0.05)


def pyspy_of(child: Child) -> list[psutil.Process]:
    return [p for p in psutil.Process(child.pid).children(recursive=True) if p.name() == "py-spy"]


def test_sigterm_ships_the_partial_window_and_exits_within_seconds(rig: Rig) -> None:
    collector = rig.collector()
    agent = rig.agent(collector.ready.group("grpc"))
    wait_for(agent, WINDOW, 2)
    sent_at = time.time_ns()
    started = time.monotonic()
    assert agent.stop(signal.SIGTERM, timeout=30) == 0, agent.output()
    took = time.monotonic() - started
    counts = [int(n) for n in WINDOW_SAMPLES.findall(agent.output())]
    assert collector.stop(signal.SIGTERM) == 0
    windows = rig.windows()
    print(f"\nSIGTERM to exit: {took:.2f} s, {len(counts)} windows logged, {len(windows)} stored")
    assert took < 5.0, agent.output()
    # a window without samples stores no rows: a SIGTERM just after a handover can
    # leave a final window of a few milliseconds with none
    assert len(windows) == sum(1 for n in counts if n > 0)
    assert [w[3] for w in windows[:-1]] == [w[2] for w in windows[1:]]  # no gaps
    if counts[-1] > 0:
        last = windows[-1]
        assert last[3] > sent_at and last[3] - last[2] < 1_000_000_000  # the partial window


def test_a_killed_pyspy_is_restarted_and_windows_continue(rig: Rig) -> None:
    collector = rig.collector()
    agent = rig.agent(collector.ready.group("grpc"))
    wait_for(agent, WINDOW, 1)
    victims = pyspy_of(agent)
    assert victims
    for proc in victims:
        proc.kill()
    before = len(WINDOW.findall(agent.output()))
    wait_for(agent, "py-spy exited unexpectedly")
    wait_for(agent, WINDOW, before + 2)
    assert agent.stop(signal.SIGTERM, timeout=30) == 0, agent.output()
    assert "restarting py-spy" in agent.output()
    assert collector.stop(signal.SIGTERM) == 0
    assert len(rig.windows()) >= before + 2


def test_an_agent_killed_in_an_outage_leaves_a_spool_the_next_agent_delivers(rig: Rig) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    first = rig.agent(address, "first")  # the collector is not there yet
    wait_for(first, WINDOW, 3)
    wait_for(first, "retrying in")
    recorders = pyspy_of(first)
    first.stop(signal.SIGKILL)
    logged = len(WINDOW.findall(first.output()))
    # py-spy dies with the agent (parent-death signal) instead of sampling on
    _, alive = psutil.wait_procs(recorders, timeout=10)
    assert not alive
    spooled = len(list(rig.spool.glob("*.batch")))
    assert spooled >= 2  # written through while the collector was down
    collector = rig.collector(address)
    second = rig.agent(address, "second")
    wait_for(second, WINDOW, 1)
    assert second.stop(signal.SIGTERM, timeout=30) == 0, second.output()
    assert collector.stop(signal.SIGTERM) == 0
    windows = rig.windows()
    agents: dict[str, list[int]] = {}
    for agent_id, seq, _, _ in windows:
        agents.setdefault(agent_id, []).append(seq)
    assert len(agents) == 2 and not list(rig.spool.glob("*.batch"))
    # the first agent's windows arrive under its own id and seqs, each once; only one
    # logged in the instant before the kill may not have reached the spool
    old = agents[windows[0][0]]
    assert len(old) >= logged - 1 and len(set(old)) == len(old) and old == sorted(old), agents


def test_a_hung_pyspy_is_killed_at_the_handover_and_windows_continue(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    sampler = StackSampler(SamplerConfig(period_s=1.5, lead_s=0.4, stop_timeout_s=1.0),
                           rig.target.pid)
    windows: list[ProfileWindow] = []

    async def run() -> None:
        async for window in sampler.windows():
            windows.append(window)
            if len(windows) == 1:  # freeze the recorder now sampling: a hang
                for proc in psutil.Process().children(recursive=True):
                    if proc.name() == "py-spy":
                        proc.suspend()
            elif len(windows) == 3:
                await sampler.stop()

    asyncio.run(asyncio.wait_for(run(), 60))
    assert "ignored SIGINT" in caplog.text
    # the hung recorder's samples are lost; the next one was already sampling: no gap
    assert len(windows) == 4 and windows[1].total == 0 and windows[2].total > 0
    assert all(a.end_ns == b.start_ns for a, b in zip(windows, windows[1:], strict=False))


def test_a_recorder_orphaned_by_a_killed_agent_is_killed_by_the_next(rig: Rig) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # an agent that died: its pid names the orphan's work directory
    workdir = rig.tmp / f"{WORKDIR_PREFIX}{gone.pid}-x"
    workdir.mkdir()
    orphan = subprocess.Popen([find_pyspy(), "record", "--format", "raw", "--nonblocking",
                               "-o", str(workdir / "1.raw"), "--pid", str(rig.target.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert reap_orphans() == 1
        assert orphan.wait(timeout=10) == -signal.SIGKILL and not workdir.exists()
    finally:
        orphan.kill()
        orphan.wait()


def test_a_recorder_in_another_pid_namespace_is_never_taken_for_an_orphan(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    # An agent in the model's PID namespace names its recorders' work directories with
    # the pid it sees there (3, say), which from here is not their parent's pid: seen
    # from the host it looks orphaned, and killing it would blind a live agent.
    workdir = rig.tmp / f"{WORKDIR_PREFIX}3-x"
    workdir.mkdir()
    recorder = subprocess.Popen([find_pyspy(), "record", "--format", "raw", "--nonblocking",
                                 "-o", str(workdir / "1.raw"), "--pid", str(rig.target.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    real = orphans._pid_namespace
    monkeypatch.setattr(orphans, "_pid_namespace",
                        lambda pid: "pid:[1]" if pid == str(recorder.pid) else real(pid))
    try:
        assert reap_orphans() == 0
        assert recorder.poll() is None and workdir.exists()
    finally:
        recorder.kill()
        recorder.wait()
