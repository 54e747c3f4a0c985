"""What pyproject.toml says the distribution holds, and the checkout's files it must cover.

Shared by tests/unit/test_packaging.py (the declared packages and package data against
the folders) and tests/integration/test_wheel.py (a built wheel against the files).
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def setuptools_config() -> dict[str, Any]:
    """The [tool.setuptools] table of pyproject.toml."""
    with (REPO / "pyproject.toml").open("rb") as file:
        return dict(tomllib.load(file)["tool"]["setuptools"])


def package_dirs() -> dict[str, str]:
    """Top-level folder -> its import name, from package-dir (agent -> pyrometer.agent)."""
    return {folder: name for name, folder in setuptools_config()["package-dir"].items()}


def import_name(folder: PurePosixPath) -> str:
    """The import name of a folder of the checkout: collector/api -> pyrometer.collector.api."""
    top, *rest = folder.parts
    return ".".join([package_dirs()[top], *rest])


def in_wheel(path: str) -> str:
    """Where a file of the checkout lies in the wheel: agent/cli.py -> pyrometer/agent/cli.py."""
    top, *rest = PurePosixPath(path).parts
    return "/".join([*package_dirs()[top].split("."), *rest])


def git_files(*paths: str, untracked: bool = False) -> list[str]:
    """Files git tracks under `paths` (POSIX, relative to the checkout), that still exist.

    With untracked, also the files git would offer to add (not ignored), i.e. the
    working tree as the developer sees it. Skips the test outside a git checkout.
    """
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout of the repository")
    argv = ["git", "-C", str(REPO), "ls-files", "-z"]
    if untracked:
        argv += ["--cached", "--others", "--exclude-standard"]
    listed = subprocess.run([*argv, "--", *paths], check=True, capture_output=True).stdout
    names = sorted({name for name in listed.decode().split("\0") if name})
    return [name for name in names if (REPO / name).is_file()]
