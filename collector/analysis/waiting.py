"""Frames where a thread waits rather than works: a socket read, a lock, a selector.

A sampling profiler sees a thread that waits for a peer, a lock or a core as much as one
that computes: py-spy in its default (non-idle) mode drops the threads the OS reports
as sleeping, but a thread woken from a socket read that then waits for a core (a
starved host), or for the GIL, is runnable and is sampled where it stands. So when
anything else slows the server (a neighbour taking the cores, a slow client, a queue
in front of a worker pool) these frames' share of the samples grows although the code
did not change: they are a symptom, never a code-path cause.

How a sample is told to be waiting: by its leaf Python frame, against the list below.
The alternatives, and why not alone:
- py-spy's own idle flag: the agent records idle stacks only with `--idle`, and
  py-spy's idleness is the OS thread state, so a runnable-but-starved thread is "active";
- the GIL (`--gil` samples only threads holding it): off by default, and the GIL wait
  shows at whatever frame the thread stood in, so no list can name it. That case, and
  any wait in a C call the list cannot name (`time.sleep`, `SimpleQueue.get` show as
  their Python caller), is left to the code-path scorer's other check: the target's CPU
  time per request, which grows only with work.

The list holds the standard library's Python functions whose blocking system call or lock
is a C function they call directly (so, as the leaf, they can only be waiting), read
from CPython 3.11's Lib/; a few servers' own wait loops are added where their blocking
call is a C function (gunicorn's arbiter and sync worker). Add to it when a profile
shows another; a function that does work of its own between waits does not belong. py-spy names a
function by its qualified name from Python 3.11 ("SocketIO.readinto") and by its bare
name before, and shortens a file to its path below sys.path ("socket.py",
"concurrent/futures/thread.py"): both forms match.
"""

from __future__ import annotations

from pyrometer.agent.shared.model import Frame

# (file, as py-spy shortens it) -> functions that, as the leaf, stand in a blocking C call.
# Only the innermost Python caller of the blocking call is listed: Queue.get, Event.wait,
# Future.result, Pool's get all end in Condition.wait, so threading.py's "wait" covers
# them, and a listed function that calls back into Python is never the leaf while it does.
WAITING_FRAMES: dict[str, frozenset[str]] = {
    # sock.recv_into / send / _accept / connect
    "socket.py": frozenset({"readinto", "write", "accept", "create_connection",
                            "_sendfile_use_send", "_sendfile_use_sendfile"}),
    # the SSL object's read / write / do_handshake
    "ssl.py": frozenset({"read", "write", "send", "do_handshake", "accept", "connect"}),
    # socketserver's writer for wsgiref and http.server: sock.sendall. Seen in the quick
    # evaluation's surge: 9% -> 20% of samples as 64 threads wait to send (and for the GIL)
    "socketserver.py": frozenset({"write"}),
    # select / poll / epoll / kqueue: every event loop and socketserver idles here
    "selectors.py": frozenset({"select"}),
    # a lock's acquire: Condition.wait (and Event, Semaphore, Barrier, Queue through it),
    # Thread.join
    "threading.py": frozenset({"wait", "_wait_for_tstate_lock"}),
    # os.waitpid, and the sleeps of a wait with a timeout
    "subprocess.py": frozenset({"_try_wait", "_wait"}),
    # a pipe's read; its poll goes through selectors.py
    "multiprocessing/connection.py": frozenset({"_recv"}),
    "multiprocessing/synchronize.py": frozenset({"wait"}),
    # an idle pool worker blocks in SimpleQueue.get (C): its leaf is the worker loop
    "concurrent/futures/thread.py": frozenset({"_worker"}),
    # select.select (C) in the servers' own wait loops
    "gunicorn/arbiter.py": frozenset({"sleep"}),
    "gunicorn/workers/sync.py": frozenset({"wait"}),
}


def _file_key(file: str) -> str | None:
    """The list's key that `file` ends with, at a path boundary; None if none does."""
    path = file.replace("\\", "/")
    for key in WAITING_FRAMES:
        if path == key or path.endswith("/" + key):
            return key
    return None


def is_waiting(frame: Frame) -> bool:
    """Whether a leaf frame is one where the thread waits (see the module docstring)."""
    key = _file_key(frame.file)
    return key is not None and frame.name.rsplit(".", 1)[-1] in WAITING_FRAMES[key]


def is_waiting_label(label: str) -> bool:
    """The same test on a function label, "name (file)" as flame graphs show it."""
    name, sep, rest = label.rpartition(" (")
    if not sep or not rest.endswith(")"):
        return False
    return is_waiting(Frame(name, rest[:-1]))
