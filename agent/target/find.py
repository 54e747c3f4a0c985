"""Find the process to profile: by pid, or by a regular expression on command lines."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

from pyrometer.agent.shared.errors import ConfigError, TargetError
from pyrometer.agent.target.namespace import hint_when_alone


@dataclass(frozen=True, slots=True)
class Target:
    """A process the agent profiles; ``create_time`` tells a restarted pid apart."""

    pid: int
    cmdline: str
    create_time: float  # seconds since the epoch, as psutil reports it

    def is_alive(self) -> bool:
        """True while this very process (not a later one reusing its pid) runs."""
        try:
            proc = psutil.Process(self.pid)
            return bool(proc.create_time() == self.create_time and proc.status() != "zombie")
        except psutil.Error:
            return False


def _target(proc: psutil.Process) -> Target:
    return Target(proc.pid, " ".join(proc.cmdline()), proc.create_time())


def by_pid(pid: int) -> Target:
    """The running process with this pid, or TargetError."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == "zombie":
            raise TargetError(f"process {pid} has exited (zombie)")
        return _target(proc)
    except psutil.NoSuchProcess:
        raise TargetError(_with_hint(f"no process with pid {pid}")) from None
    except psutil.AccessDenied:
        raise TargetError(
            f"no permission to read process {pid}: run the agent as the same user or root"
        ) from None


def _with_hint(message: str) -> str:
    # A sidecar that does not share the server's PID namespace sees no process at all:
    # name the setting to change rather than let the user hunt for a typo.
    hint = hint_when_alone(_pyspy_children())
    return f"{message}: {hint}" if hint else message


def _is_pyspy(proc: psutil.Process) -> bool:
    try:  # a py-spy run behind a wrapper (setpriv, sudo) has it further along its argv
        return any(os.path.basename(arg) == "py-spy" for arg in proc.cmdline())
    except psutil.Error:
        return False


def _pyspy_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if _is_pyspy(p)}


def _excluded_pids() -> set[int]:
    """The agent, its py-spy recorders and its ancestors.

    Ancestors are left out because a shell or launcher that started the agent
    carries the agent's own ``--match REGEX`` in its command line. Other children
    stay candidates: a demo or test may start the server it profiles.
    """
    pids = {os.getpid(), *_pyspy_children()}
    pids.update(p.pid for p in psutil.Process().parents())
    return pids


def _candidates(pattern: re.Pattern[str], excluded: set[int]) -> Iterable[Target]:
    for proc in psutil.process_iter():
        if proc.pid in excluded:
            continue
        try:
            target = _target(proc)
        except psutil.Error:  # exited meanwhile, a zombie, or not ours to read
            continue
        if target.cmdline and pattern.search(target.cmdline):
            yield target


def by_match(regex: str) -> Target:
    """The oldest process whose command line (args joined by spaces) matches ``regex``.

    The oldest, because a server's parent (gunicorn or uvicorn master, torchrun)
    starts before its workers and outlives their restarts; ties go to the lower pid.
    The agent itself, its py-spy children and its ancestors never match.
    """
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"--match {regex!r} is not a valid regular expression: {exc}") from None
    found = list(_candidates(pattern, _excluded_pids()))
    if not found:
        raise TargetError(_with_hint(f"no process has a command line matching {regex!r}"))
    return min(found, key=lambda t: (t.create_time, t.pid))


def all_by_match(regex: str) -> list[Target]:
    """Every process ``by_match`` would consider, oldest first (ties: lower pid first).

    Empty when none matches. For callers that must skip some matches, e.g. a target
    that is exiting while its successor already runs.
    """
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"--match {regex!r} is not a valid regular expression: {exc}") from None
    return sorted(_candidates(pattern, _excluded_pids()), key=lambda t: (t.create_time, t.pid))


def resolve(pid: int | None = None, match: str | None = None) -> Target:
    """Resolve ``--pid`` or ``--match`` (exactly one of them) to a running Target."""
    if (pid is None) == (match is None):
        raise ConfigError("give exactly one of --pid PID or --match REGEX")
    return by_pid(pid) if pid is not None else by_match(match or "")
