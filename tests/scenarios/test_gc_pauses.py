"""The server's GC-pause noise: on only where the evaluation asks for it."""

from __future__ import annotations

import os
import subprocess
import sys

from scenarios import harness

PROBE = "import threading; print(sorted(t.name for t in threading.enumerate()))"


def _threads(seed: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != harness.GC_SEED_VAR}
    env["PYTHONPATH"] = str(harness.GC_PAUSE_DIR)  # as harness.Stack.start_server sets it
    if seed is not None:
        env[harness.GC_SEED_VAR] = seed
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          timeout=60, check=True).stdout


def test_gc_pauses_run_in_a_process_given_the_seed() -> None:
    assert "'gc-pauses'" in _threads("5")


def test_gc_pauses_stay_off_without_the_seed() -> None:
    assert "'gc-pauses'" not in _threads(None)
