"""Why no target is visible: an agent alone in a PID namespace of its own.

A sidecar container that does not share the pod's (or the Compose service's) PID
namespace sees nothing but itself, so every --match and --pid fails, and "no process
matches" sends its user hunting for a typo. ``alone_in_pid_namespace`` tells that case
apart from a plain miss, from the parent of each process the agent can see.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Set

import psutil

# One line that says what to change, in the words of both places users deploy a sidecar.
NOT_SHARED = (
    "the agent sees no process but its own, so it is not in the server's PID namespace: set "
    'shareProcessNamespace: true in the Kubernetes pod, or pid: "service:<model>" (the '
    "server's service) on the agent in Docker Compose"
)


def _lineage(me: int, parents: Mapping[int, int]) -> set[int]:
    """``me`` and its visible ancestors; stops at a parent outside the view (ppid 0)."""
    seen = {me}
    pid = parents.get(me, 0)
    while pid in parents and pid not in seen:
        seen.add(pid)
        pid = parents[pid]
    return seen


def alone_in_pid_namespace(me: int, parents: Mapping[int, int],
                           helpers: Set[int] = frozenset()) -> bool:
    """True when the agent (pid ``me``) sees only itself, its ancestors and ``helpers``.

    ``parents`` maps every visible pid to its parent's pid (0 for a process whose
    parent is outside the namespace, -1 when unreadable); ``helpers`` are the agent's
    own py-spy recorders. Two conditions, both needed:

    - pid 1 is the agent or one of its ancestors (an init such as tini, or a shell
      entrypoint). In a pod sharing its namespace pid 1 is the pause process, and in
      Compose's ``pid: service:`` it is the server's init: neither is the agent's.
      It also rules out a /proc mounted with hidepid, which hides pid 1 from a
      non-root agent as well as the target.
    - nothing else is visible: no sibling, no child but py-spy, no other container's
      process, no kernel thread (the host's namespace always shows kthreadd, pid 2).

    Anything else visible means the agent shares its namespace with other programs,
    so a miss is a miss (a typo in --match) and gets no hint about namespaces. A
    ``docker exec`` or ``kubectl exec`` shell in the agent's container, or a server
    the agent's own entrypoint started, makes it look shared too: the hint is then
    left out, which is the safe way to be wrong.
    """
    lineage = _lineage(me, parents)
    if me not in parents or 1 not in lineage:
        return False
    return set(parents) <= lineage | helpers


def visible_parents() -> dict[int, int]:
    """Every pid this process can see in /proc, with its parent's pid (-1: unreadable)."""
    parents: dict[int, int] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        parents[proc.pid] = ppid if isinstance(ppid, int) else -1
    return parents


def hint_when_alone(helpers: Set[int] = frozenset()) -> str:
    """``NOT_SHARED`` when this process (with ``helpers``) is alone in its PID namespace,
    else ""."""
    try:
        alone = alone_in_pid_namespace(os.getpid(), visible_parents(), helpers)
        return NOT_SHARED if alone else ""
    except (psutil.Error, OSError):  # a hint is never worth an error of its own
        return ""
