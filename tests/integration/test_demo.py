"""`pyrometer demo`, shortened: it must produce a flame graph and leave nothing running."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from pyrometer.collector.procs import python_env

pytestmark = pytest.mark.integration
MARKER_VAR = "PYROMETER_TEST_RUN"


def _marked(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries the marker: the demo's descendants."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER_VAR) == marker:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_short_demo_writes_the_flame_graph_and_cleans_up(tmp_path: Path) -> None:
    # every process the demo starts inherits this variable, py-spy recorders included
    marker = uuid.uuid4().hex
    done = subprocess.run(
        [sys.executable, "-m", "pyrometer.agent.cli", "demo", "--duration", "4", "--window", "2",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=python_env(**{MARKER_VAR: marker}))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "flamegraph.html").stat().st_size > 1000
    assert "top functions by own samples" in done.stdout
    assert "model_" in done.stdout  # the model server's own functions lead the list
    assert not _marked(marker)
