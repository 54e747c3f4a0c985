"""Refresh or check the vendored JavaScript libraries under static/vendor/ (`make vendor`).

The page must work with no network and no node: the libraries it loads are committed
files, fetched once from the npm registry by this script and pinned by
static/vendor/vendor.lock.json, which records for each package its version, tarball
URL, the registry's `integrity` (SHA-512 of the tarball, as npm's lock files hold it),
its licence, which files of the tarball are kept, and the SHA-256 of each kept file.

    python -m pyrometer.collector.ui.vendor           fetch, verify, extract (make vendor)
    python -m pyrometer.collector.ui.vendor --check   offline: the files match the lock

Why these libraries (sizes are the minified files kept here):

- uPlot 1.6.32 (MIT, 51 KB) for the timeline: several y-axes, drag to select a range,
  bands (p50..p99), a synced cursor across stacked panels, and draw hooks for the
  throttle strips, deploy markers and spike shading, at a fraction of the size of
  general chart libraries.
- speedscope 1.25.0 (MIT) for its own views (time order, left heavy, sandwich) of a
  window's profile: its release page is vendored whole and opened with
  ``#profileURL=`` pointing at a same-origin blob of the API's speedscope JSON.
- The flame graph is Pyrometer's own (static/flame.js): see there for why not
  d3-flame-graph.

Standard library only, so it runs from a bare checkout too.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

VENDOR = Path(__file__).parent / "static" / "vendor"
LOCK = VENDOR / "vendor.lock.json"
TIMEOUT_S = 60


class VendorError(Exception):
    """A tarball that does not match the lock, or vendored files that differ from it."""


def load_lock(path: Path = LOCK) -> list[dict[str, Any]]:
    packages: list[dict[str, Any]] = json.loads(path.read_text("utf-8"))["packages"]
    return packages


def check_integrity(data: bytes, integrity: str) -> None:
    """`integrity` is npm's ``sha512-<base64>``; raises VendorError when `data` differs."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise VendorError(f"unsupported integrity {algorithm!r}; the lock holds sha512 hashes")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")
    if actual != expected:
        raise VendorError(f"integrity mismatch: lock says sha512-{expected}, tarball is sha512-{actual}")


def extract(package: dict[str, Any], tarball: bytes, into: Path = VENDOR) -> dict[str, str]:
    """Write the package's kept files (``files``: tarball path -> path under `into`);
    returns their SHA-256 by destination."""
    check_integrity(tarball, package["integrity"])
    hashes: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for source, dest in package["files"].items():
            member = archive.extractfile(source)
            if member is None:
                raise VendorError(f"{package['name']}: {source} is not a file in the tarball")
            data = member.read()
            target = into / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            hashes[dest] = hashlib.sha256(data).hexdigest()
    return hashes


def refresh(lock: Path = LOCK) -> None:
    """Fetch every package's tarball, verify it, extract it, and record the file hashes."""
    doc = json.loads(lock.read_text("utf-8"))
    for package in doc["packages"]:
        print(f"fetching {package['name']} {package['version']} from {package['tarball']}")
        with urllib.request.urlopen(package["tarball"], timeout=TIMEOUT_S) as reply:
            tarball = reply.read()
        package["sha256"] = extract(package, tarball, lock.parent)
    lock.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def check(lock: Path = LOCK) -> list[str]:
    """What differs between the vendored files and the lock (empty: all match)."""
    problems = []
    for package in load_lock(lock):
        for dest, expected in package["sha256"].items():
            path = lock.parent / dest
            if not path.is_file():
                problems.append(f"{dest}: missing (run make vendor)")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != expected:
                problems.append(f"{dest}: differs from {package['name']} {package['version']} "
                                "in the lock (run make vendor)")
        if set(package["sha256"]) != set(package["files"].values()):
            problems.append(f"{package['name']}: the lock's hashes do not cover its files "
                            "(run make vendor)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyrometer.collector.ui.vendor",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="check the vendored files against the lock, offline")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check()
            for line in problems:
                print(line, file=sys.stderr)
            return 1 if problems else 0
        refresh()
    except (OSError, VendorError, KeyError, ValueError) as err:
        print(f"vendor: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
