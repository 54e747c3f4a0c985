"""The by-hand commit benchmark runs on a real file and refuses counts it cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import commit_cost


def test_it_times_commits_of_the_bench_batches(tmp_path: Path) -> None:
    # 3 agents in groups of 2: the last group of each window has one batch
    assert commit_cost.cpu_per_commit(tmp_path / "c.duckdb", agents=3, group=2, windows=2) > 0


def test_a_count_below_one_is_refused() -> None:
    with pytest.raises(SystemExit):
        commit_cost.main(["--group", "0"])
