"""Restarts and deploys: follow the target across restarts and notice version changes.

The target's version is ``--version`` when given, else read from the environment the
target was started with (/proc/PID/environ; a process cannot change that afterwards,
so a running process keeps one version and a version change always comes with a new
process). ``Lifecycle`` is a pure state machine that turns the sequence of targets the
agent profiles into ``restart`` and ``deploy`` events; ``wait_for_target`` finds the
successor of a target that exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from pyrometer.agent.shared.model import Event, Nanos
from pyrometer.agent.target.find import Target, all_by_match

log = logging.getLogger("pyrometer.agent.target.lifecycle")
DEFAULT_VERSION_KEYS = ("APP_VERSION", "GIT_COMMIT", "IMAGE_TAG")


def parse_environ(data: bytes) -> dict[str, str]:
    """A NUL-separated environment block as a dict; bytes that are not UTF-8 become U+FFFD.

    Entries without ``=`` are skipped. When a name appears twice the first one wins,
    as it does for the C library's getenv() in the process itself.
    """
    environ: dict[str, str] = {}
    for entry in data.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name:
            environ.setdefault(name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
    return environ


def pick_version(environ: Mapping[str, str], keys: Sequence[str] = DEFAULT_VERSION_KEYS) -> str:
    """The value of the first of ``keys`` set to a non-empty value; "" when none is.

    The first key only, not a combination: keys are in order of preference (a release
    name beats a commit hash), and a combined string would turn a change of a
    lower-priority key alone into a deploy.
    """
    return next((environ[key] for key in keys if environ.get(key)), "")


@functools.lru_cache(maxsize=64)
def _warn_denied(pid: int) -> None:
    # cached: once per pid, although the agent rereads the version at every re-attach
    log.warning("cannot read the environment of pid %d (permission denied): its version is "
                "unknown; run the agent as the target's user or root, or pass --version", pid)


def read_version(pid: int, keys: Sequence[str] = DEFAULT_VERSION_KEYS,
                 override: str | None = None) -> str:
    """``override`` when given, else the first of ``keys`` in the process's start environment.

    "" when no key is set or the environment cannot be read (the process has exited,
    or belongs to another user: that is logged once per pid, never raised).
    """
    if override is not None:
        return override
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except PermissionError:
        _warn_denied(pid)
        return ""
    except OSError:  # gone already: the caller notices that on its own
        return ""
    return pick_version(parse_environ(data), keys)


def _same_process(a: Target, b: Target) -> bool:
    return a.pid == b.pid and a.create_time == b.create_time


def _descends_from(target: Target, ancestor: Target) -> bool:
    """True for a worker of a still-running ``ancestor`` (a pre-fork server's children
    usually share its command line, so they match the same --match)."""
    try:
        return any(p.pid == ancestor.pid for p in psutil.Process(target.pid).parents())
    except psutil.Error:
        return False


def find_successor(match: str, exclude: Target | None = None) -> Target | None:
    """The oldest process matching ``match`` that is neither ``exclude`` nor its worker."""
    for candidate in all_by_match(match):
        if exclude is None:
            return candidate
        if not _same_process(candidate, exclude) and not _descends_from(candidate, exclude):
            return candidate
    return None


async def wait_for_target(match: str, stop: asyncio.Event, *, poll_s: float = 0.5,
                          exclude: Target | None = None) -> Target | None:
    """Poll every ``poll_s`` until a process matches ``match``; None once ``stop`` is set.

    ``exclude`` (the target that exited) and its workers never qualify, so a target
    still shutting down is not re-attached to. Known limit: when a pre-fork server's
    parent is killed outright, its orphaned workers may outlive it briefly, and one of
    them, matching the same command line, can be taken as the successor.
    """
    while not stop.is_set():
        found = await asyncio.to_thread(find_successor, match, exclude)
        if found is not None:
            return found
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)
    return None


class Lifecycle:
    """Turns the targets the agent profiles, one after another, into events.

    The first target observed emits nothing: the agent starting is neither a restart
    nor a deploy. A different process (pid or create time) emits ``restart``, and also
    ``deploy`` when its version is known and differs from the last known version. An
    unknown version ("", e.g. an unreadable environment) never makes a deploy, and the
    next known version is compared with the last known one, not with "".
    """

    def __init__(self) -> None:
        self._target: Target | None = None
        self._version = ""
        self._known_version = ""  # the last non-empty version seen

    def observe(self, target: Target, version: str, now_ns: Nanos) -> list[Event]:
        """Events for the agent profiling ``target`` (at ``version``) from ``now_ns`` on."""
        previous, previous_version = self._target, self._version
        self._target, self._version = target, version
        known = self._known_version
        if version:
            self._known_version = version
        if previous is None or _same_process(previous, target):
            # the same process cannot change its environment; keep a version learned late
            self._version = version or previous_version
            return []
        events = [Event(time_ns=now_ns, kind="restart", version=version,
                        previous_version=previous_version, pid=target.pid,
                        previous_pid=previous.pid)]
        if version and version != known:
            events.append(Event(time_ns=now_ns, kind="deploy", version=version,
                                previous_version=known, pid=target.pid,
                                previous_pid=previous.pid))
        return events
