"""Garbage collection paused while answers are built (counted in and out across threads),
and the thresholds a collector process collects with."""

from __future__ import annotations

import argparse
import gc
import threading
from collections.abc import Iterator

import pytest

from pyrometer.collector.gcpause import paused, without_gc


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_collection_is_off_while_a_build_runs_and_back_after() -> None:
    with paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused():
        raise RuntimeError("a build that fails")
    assert gc.isenabled()


def test_it_stays_off_until_the_last_of_overlapping_builds_ends() -> None:
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with paused():
            inside.set()
            leave.wait(timeout=60)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(timeout=60)
    with paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other build still runs
    leave.set()
    thread.join(timeout=60)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    assert without_gc(gc.isenabled)() is False
    assert not gc.isenabled()


def test_a_collector_process_collects_with_the_ingest_thresholds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyrometer.collector import gcpause, service

    seen: list[tuple[int, ...]] = []

    async def run(config: object) -> int:
        seen.append(gc.get_threshold())
        return 0

    monkeypatch.setattr(service.collector_config, "resolve", lambda args: "config")
    monkeypatch.setattr(service, "run", run)
    before = gc.get_threshold()
    try:
        assert service.main(argparse.Namespace()) == 0
    finally:
        gc.set_threshold(*before)
    assert seen == [gcpause.INGEST_THRESHOLDS]
