"""Fixtures for every test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def own_spool_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's agents keep their default spools under a directory of their own.

    The default spool directory (per service and collector) outlives the agent, which
    is its purpose; without this an agent of one test could deliver what an agent of an
    earlier run left behind. Agents started as subprocesses inherit the variable.
    """
    monkeypatch.setenv("XDG_STATE_HOME", str(Path(tmp_path_factory.mktemp("state"))))
