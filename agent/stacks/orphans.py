"""py-spy must not outlive the agent that started it.

py-spy stops by itself only when its target exits, so an agent killed with SIGKILL
would leave its recorder sampling the target for as long as the target lives. Two
measures, neither involving a shell:

* ``PR_SET_PDEATHSIG``: py-spy is started through ``setpriv --pdeathsig KILL``
  (util-linux), which sets the flag and execs py-spy; the kernel then kills py-spy
  when the agent's event-loop thread, which spawned it, dies. Setting the flag from
  Python would need ``preexec_fn``, which is unsafe in a process with threads (gRPC
  has them). The kernel clears the flag when it execs a binary with file
  capabilities, as in the agent image (``setcap cap_sys_ptrace``); there the
  container runtime kills what is left when the agent container exits.
* Sweep: each recorder writes into a work directory named after the agent's pid
  (``pyrometer-pyspy-PID-*``). On start the sampler kills any recorder of this user
  whose parent is not that pid any more: the orphan of an agent that was killed.
  Only recorders in the agent's own PID namespace: the pid in the name is the one
  its agent saw, so a recorder of an agent in another namespace (a sidecar sharing
  the model's namespace, beside one on the host, with one /tmp) names a pid that
  means nothing here; killing it would kill a live agent's recorder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

WORKDIR_PREFIX = "pyrometer-pyspy-"
_WORKDIR = re.compile(re.escape(WORKDIR_PREFIX) + r"(\d+)-")


def workdir_prefix() -> str:
    """The prefix of this agent's py-spy work directories (it names the agent's pid)."""
    return f"{WORKDIR_PREFIX}{os.getpid()}-"


def with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """``argv`` behind ``setpriv --pdeathsig KILL`` where setpriv exists (Linux)."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is None:
        return list(argv)
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


def reap_orphans() -> int:
    """Kill py-spy recorders left behind by agents that died; returns how many."""
    killed = 0
    for proc in psutil.process_iter(["ppid", "cmdline", "uids"]):
        with contextlib.suppress(psutil.Error):
            owner = _orphan_owner(proc)
            if owner is None:
                continue
            log.warning("killing py-spy pid %d left by agent pid %d, which is gone",
                        proc.pid, owner[0])
            proc.kill()
            shutil.rmtree(owner[1], ignore_errors=True)
            killed += 1
    return killed


def _orphan_owner(proc: psutil.Process) -> tuple[int, Path] | None:
    """(agent pid, work directory) when proc is a recorder whose agent is not its parent."""
    info = proc.info
    cmdline: list[str] = info.get("cmdline") or []
    uids = info.get("uids")
    if "record" not in cmdline or uids is None or uids.real != os.getuid():
        return None
    for arg in cmdline:
        match = _WORKDIR.search(arg)
        if match is not None:
            here = _pid_namespace("self")
            if here is None or _pid_namespace(str(proc.pid)) != here:
                return None  # another namespace's pids (or unknown): not ours to judge
            agent = int(match[1])
            if agent != info.get("ppid"):
                return agent, Path(arg).parent
            return None
    return None


def _pid_namespace(pid: str) -> str | None:
    """The PID namespace of a process ("pid:[4026531836]"), None when it cannot be read."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None
