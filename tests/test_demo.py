"""`pyrometer demo`, shortened: it must produce a flame graph and leave nothing running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pyrometer.collector.procs import python_env

pytestmark = pytest.mark.integration


def test_short_demo_writes_the_flame_graph_and_cleans_up(tmp_path: Path) -> None:
    before = {p.pid for p in psutil.process_iter()}
    done = subprocess.run(
        [sys.executable, "-m", "pyrometer.agent.cli", "demo", "--duration", "4", "--window", "2",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=python_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "flamegraph.html").stat().st_size > 1000
    assert "top functions by own samples" in done.stdout
    assert "model_" in done.stdout  # the model server's own functions lead the list
    leftovers = [p for p in psutil.process_iter(["pid", "cmdline"])
                 if p.pid not in before and any("model_server.py" in a or "py-spy" in a
                                                for a in (p.info["cmdline"] or []))]
    assert not leftovers
