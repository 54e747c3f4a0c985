"""Start a child process and wait for its ready line: used by the demo and the tests.

Readiness is a line the child prints (never a fixed sleep). After the ready line a
thread keeps draining the child's output into a log file, so the child can never block
on a full pipe and what it said stays readable after it exits.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pyrometer.collector.errors import CollectorError


class ChildError(CollectorError):
    """A child process exited or stayed silent before printing its ready line."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]
    log_path: Path
    ready: re.Match[str]
    _drain: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the child and wait; kill it if it does not exit within timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._drain is not None:
            self._drain.join(timeout)
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start(name: str, argv: list[str], ready: str, log_dir: Path, *, timeout: float = 60.0,
          env: dict[str, str] | None = None) -> Child:
    """Run argv (stdout and stderr merged) until a line matches the regex `ready`."""
    log_path = log_dir / f"{name}.log"
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, bufsize=1, start_new_session=True)
    assert proc.stdout is not None
    log = log_path.open("w")
    match = _wait_for_line(proc, proc.stdout, re.compile(ready), log, timeout)
    if match is None:
        proc.wait()
        log.close()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise ChildError(f"{name} did not become ready (exit code {proc.returncode}):\n{tail}")
    drain = threading.Thread(target=_copy, args=(proc.stdout, log), daemon=True,
                             name=f"drain-{name}")
    drain.start()
    return Child(name, proc, log_path, match, drain)


def _wait_for_line(proc: subprocess.Popen[str], stream: IO[str], pattern: re.Pattern[str],
                   log: IO[str], timeout: float) -> re.Match[str] | None:
    # A reader thread, so that a child that prints nothing cannot hang us past timeout.
    found: list[re.Match[str]] = []
    done = threading.Event()

    def read() -> None:
        for line in stream:
            log.write(line)
            log.flush()
            match = pattern.search(line)
            if match:
                found.append(match)
                break
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not done.wait(0.05):
        if time.monotonic() > deadline:
            proc.kill()  # the reader then sees EOF and ends
            break
    reader.join()
    return found[0] if found else None


def _copy(stream: IO[str], log: IO[str]) -> None:
    try:
        for line in stream:
            log.write(line)
            log.flush()
    finally:
        log.close()


def python_env(**extra: str) -> dict[str, str]:
    """The current environment plus `extra`, unbuffered so ready lines arrive at once."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env
