"""The built sdist and wheel: the wheel, installed in a fresh virtualenv, runs a collector
and an agent.

Every other test runs on the editable install, which imports straight from the
checkout's folders: a subpackage or data file that pyproject.toml leaves out of the
distribution goes unnoticed there. That is how issue 11 shipped (a wheel installed with
[collector] gave a collector that did not start). Here an sdist is built from a copy of
the checkout and the wheel from that sdist (as pip does for a source release); the wheel
is installed with its extras into a new virtualenv (no system site packages) and run
from a folder outside the checkout without PYTHONPATH, so every import comes from the
wheel: a collector, an agent profiling a real target, and queries of the API. The
agent-only install must also stay light: it must not pull in DuckDB, pyarrow or aiohttp
(the sidecar image is built from it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyrometer.collector.procs import Child, start
from support.layout import REPO, git_files, in_wheel, package_dirs
from support.targets import BUSY

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DEADLINE_S = 120.0  # generous: a busy 2-core CI machine; all is well long before this
SERVICE = "wheel-svc"
TARGET_FILE = "busy_target.py"
HOT_FRAME = f"leaf ({TARGET_FILE}:"  # BUSY burns its CPU in leaf(), as a folded frame
COLLECTOR_ONLY = {"duckdb", "pyarrow", "aiohttp"}
AGENT_NEEDS = {"grpcio", "protobuf", "py-spy", "psutil", "nvidia-ml-py"}
# what a variable could smuggle in from the source tree or the test's own virtualenv
LEAKY_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV")


@dataclass(frozen=True)
class Install:
    sdist: Path
    wheel: Path
    venv: Path
    work: Path  # a folder outside the checkout, the cwd of everything run from the venv
    env: dict[str, str]

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def pyrometer(self) -> Path:
        return self.venv / "bin" / "pyrometer"


def _pip(*args: str | Path) -> None:
    """The test's own pip (recent enough for --python), output shown only on failure."""
    done = subprocess.run([sys.executable, "-m", "pip", *map(str, args)], capture_output=True,
                          text=True, timeout=540)
    assert done.returncode == 0, f"pip {' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"


def _clean_env(venv: Path) -> dict[str, str]:
    """This environment less PYTHONPATH and the like, with the fresh venv first on PATH."""
    env = {key: value for key, value in os.environ.items() if key not in LEAKY_VARIABLES}
    own_bin = Path(sys.prefix) / "bin"
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != own_bin]
    env.update(PATH=os.pathsep.join([str(venv / "bin"), *path]), VIRTUAL_ENV=str(venv),
               PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """The wheel built once from the working tree, installed with [collector,proxy]."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the files git sees: an in-tree build would leave build/ and
    # *.egg-info in the checkout, and a stale build/lib can put a module that the list
    # no longer names back into the wheel.
    source = tmp / "source"
    for name in git_files(untracked=True):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    # the sdist through setuptools' own PEP 517 hook (no `build` package needed), then the
    # wheel from the sdist with build isolation, as pip installs a source release: the
    # [build-system] table is tested too, and whatever the sdist drops the wheel lacks
    subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                    "build_meta.build_sdist(sys.argv[1])", tmp / "sdist"],
                   cwd=source, check=True, capture_output=True, timeout=300)
    sdist, = (tmp / "sdist").glob("pyrometer-*.tar.gz")
    _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", tmp / "dist", sdist)
    wheel, = (tmp / "dist").glob("pyrometer-*.whl")
    # --without-pip, and the test's own pip installs with --python: no ensurepip, and a
    # newer, faster pip than the one Python bundles
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    _pip("--python", venv / "bin" / "python", "install", "--quiet", f"{wheel}[collector,proxy]")
    work = tmp / "work"
    work.mkdir()
    assert not work.resolve().is_relative_to(REPO), f"{work} lies inside the checkout {REPO}"
    return Install(sdist, wheel, venv, work, _clean_env(venv))


def test_the_sdist_holds_every_file_of_the_packages(installed: Install) -> None:
    expected = {*git_files(*package_dirs(), untracked=True), "pyproject.toml", "README.md"}
    with tarfile.open(installed.sdist) as sdist:
        # every member lies under the sdist's own top folder, pyrometer-VERSION/
        inside = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    missing = sorted(expected - inside)
    assert not missing, f"the sdist lacks {missing}: a wheel built from it would lack them too"


def test_the_wheel_holds_every_file_of_the_packages(installed: Install) -> None:
    expected = {in_wheel(name) for name in git_files(*package_dirs(), untracked=True)}
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = [name for name in wheel.namelist() if not name.endswith("/")]
    inside = {name for name in names if name.startswith("pyrometer/")}
    missing, extra = sorted(expected - inside), sorted(inside - expected)
    assert not missing, (f"the wheel lacks {missing}: list their packages and data globs in "
                         "pyproject.toml (tests/unit/test_packaging.py says which)")
    assert not extra, f"the wheel holds files the checkout does not: {extra}"
    others = sorted({top for top in {name.split("/")[0] for name in names}
                     if top != "pyrometer" and not re.fullmatch(r"pyrometer-[^/]+\.dist-info", top)})
    assert not others, f"the wheel installs more than the pyrometer package: {others}"


def _run(installed: Install, *argv: str | Path) -> str:
    done = subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=DEADLINE_S,
                          cwd=installed.work, env=installed.env)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


IMPORT_ALL = """
import importlib, json, pkgutil, sys
import pyrometer.agent, pyrometer.collector, pyrometer.proto
failed, count = {}, 0
for module in pkgutil.walk_packages(pyrometer.__path__, "pyrometer."):
    count += 1
    try:
        importlib.import_module(module.name)
    except Exception as exc:
        failed[module.name] = repr(exc)
print(json.dumps({"prefix": sys.prefix, "path": sys.path, "count": count, "failed": failed,
                  "files": [m.__file__ for m in (pyrometer.agent, pyrometer.collector, pyrometer.proto)]}))
"""


def test_imports_come_from_the_venv_and_every_module_imports(installed: Install) -> None:
    found = json.loads(_run(installed, installed.python, "-c", IMPORT_ALL))
    venv = installed.venv.resolve()
    site_packages = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    assert Path(found["prefix"]).resolve() == venv, found["prefix"]
    assert all(Path(file).resolve().is_relative_to(site_packages) for file in found["files"]), (
        f"imported from outside {site_packages}: {found['files']}")
    assert not [p for p in found["path"] if p and Path(p).resolve().is_relative_to(REPO)], found["path"]
    # every module of the installed packages imports, with the extras installed
    modules = [name for name in git_files(*package_dirs(), untracked=True) if name.endswith(".py")]
    assert not found["failed"], "modules of the installed wheel that do not import:\n" + "\n".join(
        f"  {name}: {error}" for name, error in sorted(found["failed"].items()))
    assert found["count"] == len(modules), (
        f"{found['count']} modules installed, {len(modules)} .py files under {sorted(package_dirs())}")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _query(api: str, path: str, **params: str) -> str:
    return f"{api}{path}?{urllib.parse.urlencode(params)}"


def _wait_for_hot_frame(api: str, children: list[Child]) -> str:
    """Poll the folded flame graph until it shows the target's function (404 until data)."""
    url = _query(api, "/api/v1/flamegraph", service=SERVICE, **{"from": "now-10m", "to": "now"},
                 format="folded")
    deadline = time.monotonic() + DEADLINE_S
    status, body = 0, b""
    while time.monotonic() < deadline:
        for child in children:
            assert child.proc.poll() is None, f"{child.name} exited:\n{child.output()[-3000:]}"
        status, body = _get(url)
        if status == 200 and HOT_FRAME in body.decode():
            return body.decode()
        time.sleep(0.2)
    logs = "\n".join(f"--- {c.name}:\n{c.output()[-3000:]}" for c in children)
    raise AssertionError(f"no {HOT_FRAME!r} after {DEADLINE_S}s (last {status}: {body[:500]!r})\n{logs}")


def test_collector_and_agent_from_the_wheel_profile_a_target(installed: Install, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(installed.work)  # procs.start runs its children in the current folder
    (tmp_path / TARGET_FILE).write_text(BUSY)
    env = installed.env
    children: list[Child] = []
    try:
        collector = start("collector", [str(installed.pyrometer), "collector", "--db",
                                        str(tmp_path / "wheel.duckdb"), "--grpc-listen", "127.0.0.1:0",
                                        "--http-listen", "127.0.0.1:0"],
                          r"ingest on (?P<grpc>\S+) .*API on (?P<http>http://\S+)", tmp_path,
                          timeout=DEADLINE_S, env=env)
        children.append(collector)
        target = start("target", [str(installed.python), str(tmp_path / TARGET_FILE)], "target ready",
                       tmp_path, timeout=DEADLINE_S, env=env)
        children.append(target)
        agent = start("agent", [str(installed.pyrometer), "agent", "--collector",
                                collector.ready.group("grpc"), "--service", SERVICE, "--pid",
                                str(target.pid), "--window", "2", "--requests-listen", "off",
                                "--spool-dir", str(tmp_path / "spool")],
                      "profiling pid", tmp_path, timeout=DEADLINE_S, env=env)
        children.append(agent)
        api = collector.ready.group("http")

        folded = _wait_for_hot_frame(api, children)
        assert all(re.fullmatch(r".+ \d+", line) for line in folded.splitlines()), folded

        window = {"service": SERVICE, "from": "now-10m", "to": "now"}
        # the HTML page is package data (collector/render/*.html), read at run time
        status, html = _get(_query(api, "/api/v1/flamegraph", **window, format="html"))
        assert status == 200 and b"<html" in html.lower() and b"leaf" in html, (
            f"{status} {html[:500]!r}\n{collector.output()[-3000:]}")
        status, spikes = _get(_query(api, "/api/v1/spikes", **window))
        assert status == 200, f"{status} {spikes[:500]!r}\n{collector.output()[-3000:]}"
        assert isinstance(json.loads(spikes), dict), spikes
        status, openapi = _get(f"{api}/api/v1/openapi.json")
        assert status == 200, openapi
        document = json.loads(openapi)
        assert document["openapi"].startswith("3.") and "/api/v1/flamegraph" in document["paths"]
    finally:
        for child in reversed(children):
            child.stop(signal.SIGTERM, timeout=30)


def test_the_agent_install_leaves_the_collector_dependencies_out(installed: Install,
                                                                 tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    _pip("--python", installed.python, "install", "--quiet", "--dry-run", "--ignore-installed",
         "--report", report, installed.wheel)
    resolved = {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
                for item in json.loads(report.read_text())["install"]}
    assert not resolved & COLLECTOR_ONLY, (
        f"`pip install pyrometer` (the agent) would install {sorted(resolved & COLLECTOR_ONLY)}: "
        "keep them in the collector extra")
    assert AGENT_NEEDS <= resolved, f"the agent install lacks {sorted(AGENT_NEEDS - resolved)}"
