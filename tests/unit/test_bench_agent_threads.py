"""Row 2's thread-by-thread account of the agent's own CPU."""

from __future__ import annotations

import os
import threading

from bench import agent_threads

MS = 1_000_000  # ns


def test_threads_are_named_by_what_they_do() -> None:
    assert agent_threads.role("python", "MainThread").startswith("event loop")
    assert agent_threads.role("python", "pyrometer-process-sampler").startswith("process and host")
    assert agent_threads.role("python", "asyncio_3").startswith("asyncio's executor")
    assert agent_threads.role("python", "asyncio-waitpid-17").startswith("asyncio's waitpid")
    assert agent_threads.role("python", "Thread-1 (_poll_wrapper)") == "gRPC aio poller"
    assert agent_threads.role("event_engine", None).startswith("gRPC core")
    assert agent_threads.role("lifeguard", None) == agent_threads.role("grpc_global_tim", None)
    # what it does not know, it says as it found it
    assert agent_threads.role("python", "gpu-load") == "gpu-load (Python)"
    assert agent_threads.role("openblas", None) == "openblas (native)"


def test_breakdown_counts_threads_born_and_ended_within_the_interval() -> None:
    watch = agent_threads.ThreadWatch.__new__(agent_threads.ThreadWatch)
    watch.pid = 0
    watch.first = {1: ("python", 100 * MS), 2: ("event_engine", 50 * MS), 3: ("python", 0)}
    watch.seen = dict(watch.first)
    # a poll: the main thread ran 20 ms, gRPC's 10 ms, thread 3 ran 4 ms and then ended,
    # and thread 4 was born and ran 6 ms
    watch.seen.update({1: ("python", 120 * MS), 2: ("event_engine", 60 * MS),
                       3: ("python", 4 * MS), 4: ("python", 6 * MS)})
    watch.alive = {1, 2, 4}
    by_role = watch.breakdown({1: "MainThread", 4: "asyncio_0"}, seconds=2.0)
    assert list(by_role.values()) == sorted(by_role.values(), reverse=True)
    assert by_role == {agent_threads.role("python", "MainThread"): 10.0,
                       agent_threads.role("event_engine", None): 5.0,
                       agent_threads.role("python", "asyncio_0"): 3.0,
                       agent_threads.ENDED: 2.0}


def test_this_process_threads_are_read_from_proc() -> None:
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: stop.wait(30), daemon=True)
    spinner.start()
    try:
        watch = agent_threads.ThreadWatch(os.getpid())
        assert {os.getpid(), spinner.native_id} <= watch.alive
        watch.poll()
        assert all(ns >= watch.first[tid][1] for tid, (_, ns) in watch.seen.items() if tid in watch.first)
    finally:
        stop.set()
        spinner.join()
