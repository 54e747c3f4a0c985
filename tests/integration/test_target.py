"""Resolving --pid and --match to a running process, with real processes."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psutil
import pytest

from pyrometer.agent.shared.errors import ConfigError, TargetError
from pyrometer.agent.target.find import all_by_match, by_match, by_pid, resolve

WAIT = "import sys; print('ready', flush=True); sys.stdin.read()"


@pytest.fixture
def token() -> str:
    return f"pyrometer-test-{uuid.uuid4().hex}"


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def start(procs: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WAIT, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_by_pid(spawn: list[subprocess.Popen[str]], token: str) -> None:
    # a bystander, so that a test runner alone in a PID namespace of its own (a CI
    # container) still sees another process and gets the plain message, no namespace hint
    start(spawn, token, "bystander")
    proc = start(spawn, token)
    target = by_pid(proc.pid)
    assert target.pid == proc.pid and token in target.cmdline and target.is_alive()
    proc.kill()
    proc.wait()
    assert not target.is_alive()
    with pytest.raises(TargetError, match=f"^no process with pid {proc.pid}$"):
        by_pid(proc.pid)


def test_match_picks_the_oldest(spawn: list[subprocess.Popen[str]], token: str) -> None:
    first = start(spawn, token, "worker")
    start(spawn, token, "worker")
    assert by_match(re.escape(token) + " worker$").pid == first.pid
    assert resolve(match=token).pid == first.pid


def test_match_never_picks_the_agent_itself(token: str) -> None:
    # Another test run with the very same command line may run beside this one (two
    # checkouts on one machine): it is a fair match. Only this process (and its
    # ancestors) must never be among the matches.
    own = re.escape(" ".join(psutil.Process().cmdline()))
    mine = {psutil.Process().pid, *(p.pid for p in psutil.Process().parents())}
    others = [t.pid for t in all_by_match(own + "$")]
    assert not mine & set(others)
    if not others:
        with pytest.raises(TargetError, match="no process has a command line matching"):
            by_match(own + "$")


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        by_match("(")
    with pytest.raises(ConfigError, match="exactly one"):
        resolve()
    with pytest.raises(ConfigError, match="exactly one"):
        resolve(pid=1, match="x")
