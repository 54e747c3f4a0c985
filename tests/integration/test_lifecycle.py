"""Restarts and deploys: versions from real processes' environments, finding a restarted
target among real processes, and the pure event state machine.

Targets carry a unique token on their command line and print a ready line; nothing
sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from pyrometer.agent.shared.model import Event
from pyrometer.agent.target.find import Target, by_pid
from pyrometer.agent.target.lifecycle import (
    DEFAULT_VERSION_KEYS,
    Lifecycle,
    find_successor,
    parse_environ,
    pick_version,
    read_version,
    wait_for_target,
)

WAIT = "import sys; print('ready', flush=True); sys.stdin.read()"
# a pre-fork parent: its worker shares its command line, as gunicorn's workers do
FORKS = ("import os, sys\nif os.fork() == 0:\n    sys.stdin.read(); os._exit(0)\n"
         "print('ready', flush=True); sys.stdin.read()")
Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def token() -> str:
    return f"pyrometer-test-{uuid.uuid4().hex}"


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start ``python -c CODE ARGS`` with extra environment; waits for its ready line."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, code: str = WAIT, **env: str) -> subprocess.Popen[str]:
        base = {k: v for k, v in os.environ.items() if k not in DEFAULT_VERSION_KEYS}
        proc = subprocess.Popen([sys.executable, "-c", code, *args], env={**base, **env},
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        proc.wait()


def stop_process(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()


# --- versions ----------------------------------------------------------------------------

def test_parse_environ_tolerates_odd_bytes() -> None:
    data = b"A=1\0B=x\xff\xfey\0NOEQUALS\0=nameless\0C=a=b\0A=2\0\0"
    assert parse_environ(data) == {"A": "1", "B": "x\ufffd\ufffdy", "C": "a=b"}
    assert parse_environ(b"") == {}


def test_pick_version_takes_the_first_key_with_a_value() -> None:
    env = {"GIT_COMMIT": "abc123", "IMAGE_TAG": "v7", "APP_VERSION": ""}
    assert pick_version(env) == "abc123"
    assert pick_version(env, ("IMAGE_TAG", "GIT_COMMIT")) == "v7"
    assert pick_version({}, DEFAULT_VERSION_KEYS) == ""


@pytest.mark.integration
def test_read_version_from_a_real_process(spawn: Spawn, token: str) -> None:
    both = spawn(token, APP_VERSION="1.2.3", GIT_COMMIT="abc123")
    commit_only = spawn(token, GIT_COMMIT="abc123")
    neither = spawn(token, OTHER="x")
    assert read_version(both.pid) == "1.2.3"
    assert read_version(commit_only.pid) == "abc123"
    assert read_version(neither.pid) == ""
    assert read_version(both.pid, ("GIT_COMMIT",)) == "abc123"
    assert read_version(both.pid, override="9.9") == "9.9"
    stop_process(neither)
    assert read_version(neither.pid) == ""  # gone: unknown, not an error


# --- finding the successor ---------------------------------------------------------------

@pytest.mark.integration
def test_wait_for_target_finds_the_successor(spawn: Spawn, token: str) -> None:
    old = spawn(token, "server")
    first = by_pid(old.pid)
    assert find_successor(token, exclude=first) is None  # still running, yet excluded

    async def main() -> tuple[Target | None, float]:
        stop = asyncio.Event()
        waiting = asyncio.create_task(wait_for_target(token, stop, poll_s=0.1, exclude=first))
        await asyncio.to_thread(stop_process, old)
        started = time.monotonic()
        second = await asyncio.to_thread(spawn, token, "server")
        found = await asyncio.wait_for(waiting, 10)
        assert found is not None and found.pid == second.pid
        return found, time.monotonic() - started

    found, took_s = asyncio.run(main())
    assert found is not None and found != first and took_s < 2.0


@pytest.mark.integration
def test_workers_of_the_excluded_target_never_qualify(spawn: Spawn, token: str) -> None:
    parent = by_pid(spawn(token, code=FORKS).pid)
    assert find_successor(token) == parent
    assert find_successor(token, exclude=parent) is None


def test_wait_for_target_returns_none_once_stopped(token: str) -> None:
    async def main() -> Target | None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_soon(stop.set)
        return await asyncio.wait_for(wait_for_target(token + "-nothing", stop, poll_s=5), 2)

    assert asyncio.run(main()) is None


# --- events ------------------------------------------------------------------------------

A, B, C = Target(10, "srv", 1.0), Target(11, "srv", 2.0), Target(10, "srv", 3.0)


def test_first_observation_and_the_same_process_emit_nothing() -> None:
    life = Lifecycle()
    assert life.observe(A, "1.0", 1) == []
    assert life.observe(A, "1.0", 2) == []


def test_restart_without_a_new_version_is_only_a_restart() -> None:
    life = Lifecycle()
    life.observe(A, "1.0", 1)
    assert life.observe(C, "1.0", 5) == [  # the same pid, started again
        Event(time_ns=5, kind="restart", version="1.0", previous_version="1.0", pid=10,
              previous_pid=10)]


def test_restart_with_a_new_version_is_a_restart_and_a_deploy() -> None:
    life = Lifecycle()
    life.observe(A, "1.0", 1)
    assert life.observe(B, "2.0", 5) == [
        Event(time_ns=5, kind="restart", version="2.0", previous_version="1.0", pid=11,
              previous_pid=10),
        Event(time_ns=5, kind="deploy", version="2.0", previous_version="1.0", pid=11,
              previous_pid=10)]


def test_an_unknown_version_is_never_a_deploy() -> None:
    life = Lifecycle()
    life.observe(A, "1.0", 1)
    assert [e.kind for e in life.observe(B, "", 2)] == ["restart"]
    # compared with the last known version, not with the unknown one in between
    assert [e.kind for e in life.observe(C, "1.0", 3)] == ["restart"]
    events = life.observe(A, "2.0", 4)
    assert [(e.kind, e.previous_version) for e in events] == [("restart", "1.0"), ("deploy", "1.0")]


@pytest.mark.integration
def test_a_redeploy_of_real_processes(spawn: Spawn, token: str) -> None:
    old = spawn(token, APP_VERSION="1.0")
    life = Lifecycle()
    first = by_pid(old.pid)
    assert life.observe(first, read_version(first.pid), time.time_ns()) == []
    stop_process(old)
    new = spawn(token, APP_VERSION="2.0")

    async def successor() -> Target | None:
        return await asyncio.wait_for(wait_for_target(token, asyncio.Event(), exclude=first), 10)

    second = asyncio.run(successor())
    assert second is not None and second.pid == new.pid
    events = life.observe(second, read_version(second.pid), time.time_ns())
    assert [(e.kind, e.pid, e.previous_pid, e.version, e.previous_version) for e in events] == [
        ("restart", new.pid, old.pid, "2.0", "1.0"), ("deploy", new.pid, old.pid, "2.0", "1.0")]
