"""`make bench-lake` must not rot: its harness runs here at a tiny size, every lake row.

Marked `lake`, so it runs in .venv-lake (`make test-lake`) against a PostgreSQL the
rows start themselves; elsewhere it skips and says why. The figures of a tiny run mean
nothing; what is checked is that each row measures what it says (agents spread over the
collectors, nothing lost, the commit counters read, the flame graph merging every sample
before and after the maintenance pass) and renders.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.lake import missing_extensions
from support.postgres import find_bin

pytestmark = [pytest.mark.lake, pytest.mark.integration]

if (why := missing_extensions("ducklake", "postgres_scanner")) is not None:
    pytest.skip(why, allow_module_level=True)

RUN = Path(__file__).resolve().parents[1] / "bench" / "run.py"
SECTIONS = ("## L1. ", "## L2. ", "## L3. ")


@pytest.mark.timeout(600)
def test_every_lake_row_runs_at_a_tiny_size(tmp_path: Path) -> None:
    if find_bin() is None:
        pytest.skip("PostgreSQL's initdb was not found: run `make postgres`")
    done = subprocess.run([sys.executable, str(RUN), "--lake", "--size", "tiny", "--out",
                           str(tmp_path), "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=580)
    report = json.loads((tmp_path / "BENCHMARKS-lake.json").read_text())
    failed = {name: row.get("traceback") for name, row in report["rows"].items() if not row["ok"]}
    assert done.returncode == 0 and not failed, f"{done.stdout}\n{done.stderr[-3000:]}\n{failed}"
    assert set(report["rows"]) == {"lake_ingest", "lake_files"}
    assert report["meta"]["lake"] and report["meta"]["postgresql"] != "unknown"
    assert not (tmp_path / "BENCHMARKS.md").exists()  # `make bench`'s files are not touched

    levels = report["rows"]["lake_ingest"]["figures"]["levels"]
    assert {(lv["backend"], lv["collectors"]) for lv in levels} == {
        ("file", 1), ("lake", 1), ("lake", 2)}
    for lv in levels:
        assert lv["lossless"] and lv["samples_per_s"] > 0, lv
        # every collector got agents (each stored at least their first batches)
        assert len(lv["per_collector"]) == lv["collectors"]
        assert all(c["batches"] >= 1 for c in lv["per_collector"]), lv["per_collector"]
        assert {"commits", "conflicts", "failures"} <= set(lv["measured"])
        if lv["backend"] == "lake":
            assert lv["measured"]["commits"] > 0 and "files.samples" in lv["measured"]

    files = report["rows"]["lake_files"]["figures"]
    samples = files["fill"]["acked_samples"]
    assert samples == files["plan"]["agents"] * files["plan"]["windows"] * 1000
    for state in ("before", "after"):
        assert files["flamegraph"][state]["detail"]["samples"] == samples
    assert files["maintenance"]["result"] == "ok"
    before, after = files["before"]["tables"], files["after"]["tables"]
    assert after["samples"]["parquet"] <= 2 < before["samples"]["parquet"]
    assert all(t["inlined_rows"] == 0 for name, t in after.items() if name != "maintenance_lease")

    text = (tmp_path / "BENCHMARKS-lake.md").read_text()
    positions = [text.find(section) for section in SECTIONS]
    assert -1 not in positions and positions == sorted(positions), positions
    assert not re.search(r"\bnan\b", text, re.IGNORECASE), "a figure was not measured"
