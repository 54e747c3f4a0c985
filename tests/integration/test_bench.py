"""`make bench` must not rot: its harness runs here at a tiny size, every row.

The figures of a tiny run mean nothing (seconds of sampling on a busy machine); what is
checked is that every row measures something and renders, so that `make bench` on an
idle machine produces the whole table.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "bench" / "run.py"
SECTIONS = ("## 1. ", "## 2. ", "## 3. ", "## 4. ", "## 5. ", "## 6. ", "## 7. ", "## 8. ")


@pytest.mark.timeout(600)
def test_every_row_runs_at_a_tiny_size(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(RUN), "--size", "tiny", "--out", str(tmp_path),
                           "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=580)
    report = json.loads((tmp_path / "BENCHMARKS.json").read_text())
    failed = {name: row.get("traceback") for name, row in report["rows"].items() if not row["ok"]}
    assert done.returncode == 0 and not failed, f"{done.stdout}\n{done.stderr[-3000:]}\n{failed}"
    assert set(report["rows"]) == {"slowdown", "agent_cost", "ingest_load", "queries", "page_load",
                                  "query_week"}
    assert report["meta"]["size"] == "tiny" and report["meta"]["machine"]["cores"]
    text = (tmp_path / "BENCHMARKS.md").read_text()
    positions = [text.find(section) for section in SECTIONS]
    assert -1 not in positions and positions == sorted(positions), positions
    assert not re.search(r"\bnan\b", text, re.IGNORECASE), "a figure was not measured"
    assert "CPU per request record: **" in text  # the busy-server level and its base ran


def test_an_unknown_row_is_an_error_not_a_skip(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(RUN), "--size", "tiny", "--rows", "2,9",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "no row 9" in done.stderr
    assert not (tmp_path / "BENCHMARKS.md").exists()
