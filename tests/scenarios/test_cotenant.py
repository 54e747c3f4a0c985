"""The co-tenant's noise: seeded, bounded, varying, with a periodic batch job, and a
process that stops when told."""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pyrometer.collector.procs import python_env, start
from scenarios import cotenant
from scenarios.plan import QUICK_NOISE, plan_runs


def test_schedule_is_seeded_bounded_and_varies() -> None:
    first = list(itertools.islice(cotenant.schedule(7), 300))
    assert first == list(itertools.islice(cotenant.schedule(7), 300))
    assert first != list(itertools.islice(cotenant.schedule(8), 300))
    walk = [(hold, duty) for hold, duty, what in first if what == "walk"]
    duties = [duty for _, duty in walk]
    assert all(cotenant.MIN_DUTY <= d <= cotenant.MAX_DUTY for d in duties)
    assert max(duties) - min(duties) > (cotenant.MAX_DUTY - cotenant.MIN_DUTY) / 2
    assert all(0 < hold <= cotenant.HOLD_S[1] for hold, _ in walk)
    with pytest.raises(ValueError):
        next(cotenant.schedule(1, 0.5, 0.2))


def test_the_batch_job_comes_periodically_and_stays_under_one_core() -> None:
    starts, elapsed = [], 0.0
    for hold, duty, what in itertools.islice(cotenant.schedule(11), 500):
        assert duty <= 1.0
        if what == "batch":
            assert duty >= cotenant.BATCH_DUTY
            assert cotenant.BATCH_S[0] <= hold <= cotenant.BATCH_S[1]
            starts.append(elapsed)
        elapsed += hold
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) > 10
    low, high = cotenant.BATCH_EVERY_S
    assert all(low + cotenant.BATCH_S[0] - 1e-6 <= g <= high + cotenant.BATCH_S[1] + 1e-6
               for g in gaps)


def test_burn_never_takes_more_than_its_share() -> None:
    # a busy host can only give it less CPU than asked, never more: the bound is one-sided
    began, cpu = time.monotonic(), time.process_time()
    cotenant.burn(0.2, 0.5)
    assert time.monotonic() - began >= 0.5
    assert time.process_time() - cpu <= 0.2 * 0.5 + 0.05


def test_noise_is_on_in_full_runs_and_in_one_quick_run() -> None:
    _, full = plan_runs(quick=False, runs=1, seed=2024)
    _, quiet = plan_runs(quick=False, runs=1, seed=2024, noise=False)
    _, quick = plan_runs(quick=True, runs=1, seed=2024)
    assert all(p.noise for p in full) and not any(p.noise for p in quiet)
    assert [p.scenario for p in quick if p.noise] == list(QUICK_NOISE)
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
