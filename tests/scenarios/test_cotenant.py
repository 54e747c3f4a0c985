"""The co-tenant's noise: seeded, bounded, varying, and a process that stops when told."""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pyrometer.collector.procs import python_env, start
from scenarios import cotenant
from scenarios.plan import plan_runs


def test_schedule_is_seeded_bounded_and_varies() -> None:
    first = list(itertools.islice(cotenant.schedule(7), 200))
    assert first == list(itertools.islice(cotenant.schedule(7), 200))
    assert first != list(itertools.islice(cotenant.schedule(8), 200))
    duties = [duty for _, duty in first]
    assert all(cotenant.MIN_DUTY <= d <= cotenant.MAX_DUTY for d in duties)
    assert max(duties) - min(duties) > (cotenant.MAX_DUTY - cotenant.MIN_DUTY) / 2
    assert all(cotenant.HOLD_S[0] <= hold <= cotenant.HOLD_S[1] for hold, _ in first)
    with pytest.raises(ValueError):
        next(cotenant.schedule(1, 0.5, 0.2))


def test_burn_never_takes_more_than_its_share() -> None:
    # a busy host can only give it less CPU than asked, never more: the bound is one-sided
    began, cpu = time.monotonic(), time.process_time()
    cotenant.burn(0.2, 0.5)
    assert time.monotonic() - began >= 0.5
    assert time.process_time() - cpu <= 0.2 * 0.5 + 0.05


def test_noise_is_on_in_full_runs_and_off_in_quick_ones() -> None:
    _, full = plan_runs(quick=False, runs=1, seed=2024)
    _, quiet = plan_runs(quick=False, runs=1, seed=2024, noise=False)
    _, quick = plan_runs(quick=True, runs=1, seed=2024)
    assert all(p.noise for p in full) and not any(p.noise for p in quick + quiet)
    assert [replace(p, noise=False) for p in full] == quiet  # noise moves no fault


@pytest.mark.integration
def test_the_cotenant_runs_as_a_script_until_stopped(tmp_path: Path) -> None:
    child = start("cotenant", [sys.executable, cotenant.__file__, "--seed", "3"],
                  r"duty (?P<duty>\S+) for", tmp_path, env=python_env())
    try:
        assert cotenant.MIN_DUTY <= float(child.ready.group("duty")) <= cotenant.MAX_DUTY
        assert cotenant.READY in child.output()
    finally:
        child.stop()
    assert child.proc.poll() is not None  # SIGTERM ends it: nothing left spinning
