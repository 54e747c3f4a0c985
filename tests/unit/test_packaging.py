"""pyproject.toml must name every package folder and every data file the code ships.

setuptools' automatic discovery cannot put agent/, collector/ and proto/ under the
`pyrometer.` prefix, so pyproject.toml lists the packages and package-data globs by
hand. Every other test runs on an editable install, which imports straight from the
folders and so works whatever the list says: a package missing from it (issue 11: the
collector of a `pip wheel .` install did not start) or an .html/.js/.css file that no
glob matches breaks only a real install. This reads the lists without building
anything; tests/integration/test_wheel.py builds and installs the wheel.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path, PurePosixPath

from support.layout import REPO, git_files, import_name, package_dirs, setuptools_config

PACKAGES = "pyproject.toml's [tool.setuptools] packages"
PACKAGE_DATA = "pyproject.toml's [tool.setuptools.package-data]"


def _folders() -> list[PurePosixPath]:
    """Every folder under agent/, collector/ and proto/ (relative), __pycache__ left out."""
    found = []
    for top in package_dirs():
        for folder, subfolders, _ in os.walk(REPO / top):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            found.append(PurePosixPath(Path(folder).relative_to(REPO).as_posix()))
    return found


def _package_folders() -> list[PurePosixPath]:
    return [folder for folder in _folders() if (REPO / folder / "__init__.py").is_file()]


def test_packages_lists_every_package_folder() -> None:
    listed = set(setuptools_config()["packages"])
    on_disk = {import_name(folder) for folder in _package_folders()}
    missing, extra = sorted(on_disk - listed), sorted(listed - on_disk)
    assert not missing and not extra, (
        f"{PACKAGES} differs from the folders holding an __init__.py; a package left out "
        "works in the editable install but is missing from the wheel.\n"
        f"  add to packages: {missing}\n  remove from packages (no such package folder): {extra}")


def test_every_folder_with_python_modules_is_a_package() -> None:
    # A folder of modules without __init__.py imports as a namespace package from the
    # editable install, but setuptools packs only the listed packages into the wheel.
    loose = [str(folder) for folder in _folders()
             if not (REPO / folder / "__init__.py").is_file() and any((REPO / folder).glob("*.py"))]
    assert not loose, (
        f"these folders hold Python modules but no __init__.py, so the wheel leaves them out: {loose}; "
        f"add an __init__.py and list the package in {PACKAGES}")


def _shipped_data() -> set[str]:
    """The files the package-data globs match, as setuptools expands them (relative, POSIX)."""
    patterns = setuptools_config().get("package-data", {})
    matched: set[str] = set()
    for folder in _package_folders():
        name = import_name(folder)
        for pattern in [*patterns.get("*", []), *patterns.get("", []), *patterns.get(name, [])]:
            for path in glob.glob(str(REPO / folder / pattern), recursive=True):
                matched.add(Path(path).relative_to(REPO).as_posix())
    return matched


def test_package_data_globs_match_every_tracked_data_file() -> None:
    data = [name for name in git_files(*package_dirs()) if not name.endswith(".py")]
    assert data, "expected the .proto and .html files among the tracked files"
    packages = {str(folder) for folder in _package_folders()}
    shipped = _shipped_data()
    hints = []
    for name in data:
        if name in shipped:
            continue
        path = PurePosixPath(name)
        owner = next((parent for parent in path.parents if str(parent) in packages), path.parent)
        pattern = (path.parent.relative_to(owner) / f"*{path.suffix or path.name}").as_posix()
        hints.append(f"  {name}: add {pattern!r} to \"{import_name(owner)}\"")
    assert not hints, (
        f"tracked files that no glob in {PACKAGE_DATA} matches, so the wheel leaves them out:\n"
        + "\n".join(hints))
