"""Fixtures for every test, and the hypothesis profiles."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from support.postgres import Postgres

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


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of the module's own (the lake's catalog), on a free port of
    127.0.0.1; the module skips, saying why, where its binaries are missing."""
    from support.postgres import start_postgres

    try:
        pg = start_postgres()
    except RuntimeError as err:  # no server binaries here: say what to do
        pytest.skip(str(err))
    yield pg
    pg.stop()
