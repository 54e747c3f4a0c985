"""`make bench`: every row of BENCHMARKS.md in one session, side by side.

    python tests/bench/run.py [--size tiny|full] [--rows 1,2,4] [--out DIR] [--workdir DIR]
    python tests/bench/run.py --lake [--size tiny|full] [--rows L1] [--out DIR]

Runs the rows in order (1 slowdown, 2-3 agent cost and wire, 4 collector ingest, 5-6
queries and storage, 7 the web page), then writes BENCHMARKS.md and BENCHMARKS.json into --out (the
repository root by default): every figure, the machine it ran on and the exact command.
A row that fails is reported as failed, in both files, and the command exits 1 after the
others have run: a partial table is still worth reading, a silent gap is not.

With --lake it runs the lake backend's rows instead (L1 ingest with 1-3 collectors,
L2-L3 a flame graph over the lake and its files before and after maintenance), which
need the lake's DuckDB pin and so run from .venv-lake (`make bench-lake`), and writes
BENCHMARKS-lake.md and BENCHMARKS-lake.json: the two sets come from two virtualenvs and
two sessions, so neither run rewrites the other's files.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import common, goals  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# row numbers of BENCHMARKS.md -> the module that measures them
ROWS: dict[str, tuple[str, ...]] = {
    "slowdown": ("1",), "agent_cost": ("2", "3"), "ingest_load": ("4",), "queries": ("5", "6"),
    "page_load": ("7",), "query_week": ("8",)}
LAKE_ROWS: dict[str, tuple[str, ...]] = {"lake_ingest": ("L1",), "lake_files": ("L2", "L3")}
PACKAGES = ("py-spy", "pyroscope-io", "grpcio", "protobuf", "duckdb", "pyarrow", "aiohttp", "psutil",
            "duckdb-extension-ducklake", "duckdb-extension-postgres-scanner")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--size", choices=common.SIZES, default="full")
    parser.add_argument("--lake", action="store_true", help="the lake backend's rows instead, "
                        "into BENCHMARKS-lake.md and BENCHMARKS-lake.json (run from .venv-lake)")
    parser.add_argument("--rows", help="comma-separated row numbers to run (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT,
                        help="where the two files go (default: the repository)")
    parser.add_argument("--workdir", type=Path, help="keep each row's logs and databases here "
                        "(default: a temporary folder, removed afterwards)")
    return parser.parse_args(argv)


def selected(rows: str | None, table: dict[str, tuple[str, ...]] = ROWS) -> list[str]:
    """The row modules to run, in order; an unknown row number is an error, not a skip."""
    if not rows:
        return list(table)
    wanted = {r.strip() for r in rows.split(",") if r.strip()}
    known = {n for numbers in table.values() for n in numbers}
    if unknown := sorted(wanted - known):
        raise SystemExit(f"--rows: no row {', '.join(unknown)} (rows are {', '.join(sorted(known))})")
    return [name for name, numbers in table.items() if wanted & set(numbers)]


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "packages": versions}


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def run_row(name: str, size: str, work: Path,
            table: dict[str, tuple[str, ...]] = ROWS) -> dict[str, Any]:
    """Measure one row; a failure becomes a result that says so."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    began, load = time.monotonic(), os.getloadavg()
    title = name
    try:
        module = importlib.import_module(f"bench.{name}")
        title = module.TITLE
        result = {"ok": True, "figures": module.measure(size, folder)}
    except (Exception, SystemExit) as error:  # noqa: BLE001 - one broken row must not hide the rest
        result = {"ok": False, "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc()}
    result |= {"title": title, "rows": list(table[name]),
               "wall_s": round(time.monotonic() - began, 1),
               "load_before": [round(x, 2) for x in load],
               "load_after": [round(x, 2) for x in os.getloadavg()]}
    print(f"row {'/'.join(table[name])} {name}: {'ok' if result['ok'] else 'FAILED'} "
          f"({result['wall_s']:.0f} s)", flush=True)
    return result


def outputs(lake: bool) -> tuple[str, str]:
    """The Markdown and JSON files a run writes: the lake's rows have their own pair."""
    return ("BENCHMARKS-lake.md", "BENCHMARKS-lake.json") if lake else ("BENCHMARKS.md",
                                                                        "BENCHMARKS.json")


def _other_set(meta: dict[str, Any]) -> list[str]:
    if not meta.get("lake"):
        return ["The lake backend's rows (several collectors, a PostgreSQL catalog, Parquet "
                "files) are in [BENCHMARKS-lake.md](BENCHMARKS-lake.md), written by `make "
                "bench-lake` in the lake's own virtualenv.", ""]
    return [f"The lake backend (docs/lake.md) on DuckDB {meta['machine']['packages']['duckdb']} "
            f"(the lake's pin, .venv-lake), with the catalog in a PostgreSQL {meta['postgresql']} "
            "started for the run on 127.0.0.1 (fsync off) and the Parquet files in a local "
            "folder: S3's round trips are not in these figures. The embedded backend's rows "
            "are in [BENCHMARKS.md](BENCHMARKS.md), written by `make bench`.", ""]


def render(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    _, json_name = outputs(bool(meta.get("lake")))
    lines = ["# Pyrometer benchmarks" + (": the lake backend" if meta.get("lake") else ""), "",
             f"Produced by `{meta['command']}` (size {meta['size']}) on {meta['started']}, "
             f"commit {meta['commit']}, in {meta['wall_s'] / 60:.0f} min. Every figure is also in "
             f"[{json_name}]({json_name}).", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
             f"Python {m['python']}; {packages}. The machine is shared and noisy: compare the "
             "ratios, measured side by side in one session, more than the absolute figures. Load "
             "average (1 min) before each row is in the JSON.", "",
             "No GPU is involved in any row: these are the costs of stack sampling, shipping, "
             "storing and querying.", "", *_other_set(meta)]
    if not meta.get("lake"):
        lines += [goals.markdown(results, meta["size"]).rstrip(), ""]
    # Modules render one Markdown section per row; the cross-row figure (Pyroscope's own
    # bytes on the wire, measured in row 1) is handed to row 3's renderer.
    slowdown = results.get("slowdown", {}).get("figures", {})
    pyroscope = {k: slowdown[k] for k in ("pyroscope_wire", "pyroscope_wire_by_program")
                 if slowdown.get(k)}
    for name, result in results.items():
        if result["ok"]:
            module = importlib.import_module(f"bench.{name}")
            figures = dict(result["figures"])
            if name == "agent_cost" and pyroscope:
                figures |= pyroscope
            lines += [module.markdown(figures).rstrip(), ""]
        else:
            for number in result["rows"]:
                lines += [f"## {number}. {result['title']}", "",
                          f"**This row failed** and has no figures: {result['error']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    table = LAKE_ROWS if args.lake else ROWS
    names = selected(args.rows, table)
    make = "make bench-lake" if args.lake else "make bench"
    command = make if args.size == "full" and not args.rows else (
        "python tests/bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    meta: dict[str, Any] = {
        "command": command, "size": args.size, "commit": commit(), "machine": machine(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "lake": args.lake}
    if args.lake:
        from bench.lake_setup import postgres_version

        meta["postgresql"] = postgres_version()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pyrometer-bench-") as tmp:
        work = args.workdir or Path(tmp)
        results = {name: run_row(name, args.size, work, table) for name in names}
    meta["wall_s"] = round(time.monotonic() - began, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    md_name, json_name = outputs(args.lake)
    (args.out / json_name).write_text(json.dumps({"meta": meta, "rows": results}, indent=2) + "\n")
    (args.out / md_name).write_text(render(results, meta))
    print(f"wrote {args.out / md_name} and {json_name}", flush=True)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
