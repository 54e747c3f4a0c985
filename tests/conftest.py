"""Fixtures for every test, and the hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI must be repeatable: the same examples on every run, so a red build means a change
# broke something, not that the fuzzer was lucky. Local runs keep exploring new examples
# (and save what fails in .hypothesis/), which is where new bugs get found.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def own_spool_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's agents keep their default spools under a directory of their own.

    The default spool directory (per service and collector) outlives the agent, which
    is its purpose; without this an agent of one test could deliver what an agent of an
    earlier run left behind. Agents started as subprocesses inherit the variable.
    """
    monkeypatch.setenv("XDG_STATE_HOME", str(Path(tmp_path_factory.mktemp("state"))))
