"""The sidecar topology without containers: what a pod with shareProcessNamespace does.

A Kubernetes pod that shares its PID namespace is, to the kernel, one new PID namespace
holding the model server and the agent side by side, the agent with only SYS_PTRACE.
`unshare --pid --fork --mount-proc` makes that namespace here (with a /proc of its own,
so the agent sees what a container would see), `setpriv` leaves the agent's effective,
permitted, bounding and ambient capability sets holding CAP_SYS_PTRACE alone, and the
agent ships to a real collector outside: a new PID namespace keeps the network
namespace, so 127.0.0.1 still reaches it. The negative case is a container that does
not share: the agent alone in a namespace of its own must say which setting to change.

Needs root (to create the namespace and to drop to exactly one capability); skipped
with the reason where the machine forbids it.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pyrometer.agent.target.find import by_match
from pyrometer.collector.procs import Child, python_env, start
from support.targets import BUSY

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
CAP_SYS_PTRACE = 1 << 19  # linux/capability.h
ONLY_PTRACE = ["--inh-caps=-all,+sys_ptrace", "--ambient-caps=-all,+sys_ptrace",
               "--bounding-set=-all,+sys_ptrace"]
NEW_PID_NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
# pid 1 of the shared namespace, in the place of a pod's pause process: starts the
# server, waits for its ready line (an agent started first would find nothing), then
# runs the agent, whose output is this process's
POD = """
import json, subprocess, sys
server, agent = json.loads(sys.argv[1])
target = subprocess.Popen(server, stdout=subprocess.PIPE, text=True)
print(target.stdout.readline(), end="", flush=True)
sys.exit(subprocess.call(agent))
"""


def _probe(argv: list[str], why: str) -> None:
    """Skip the module, with the command's own words, where the machine refuses ``argv``."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f"{why}: {exc}")
    if done.returncode != 0:
        pytest.skip(f"{why}: {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")


@pytest.fixture(scope="module", autouse=True)
def namespaces_allowed() -> None:
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (util-linux) is not installed")
    _probe(NEW_PID_NAMESPACE + ["true"], "this machine forbids a new PID namespace")
    _probe(["setpriv", *ONLY_PTRACE, "true"], "cannot drop to CAP_SYS_PTRACE alone (needs root)")


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    # SIGKILL to unshare: --kill-child takes its child, pid 1 of the namespace, with
    # it, and the kernel then kills every process left in that namespace
    for child in reversed(started):
        child.stop(signal.SIGKILL)


def _collector(tmp: Path, children: list[Child]) -> Child:
    argv = CLI + ["collector", "--db", str(tmp / "sidecar.duckdb"), "--grpc-listen",
                  "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    child = start("collector", argv, r"ingest on (?P<grpc>\S+) .*API on (?P<http>http://\S+)",
                  tmp, env=python_env())
    children.append(child)
    return child


def _agent_argv(collector: str, match: str) -> list[str]:
    return CLI + ["agent", "--collector", collector, "--service", "sidecar", "--match", match,
                  "--window", "1", "--gpu", "off", "--requests-listen", "off"]


def _folded(api: str) -> str:
    query = urllib.parse.urlencode({"service": "sidecar", "from": "now-1h", "to": "now+1m",
                                    "format": "folded"})
    try:
        with urllib.request.urlopen(f"{api}/api/v1/flamegraph?{query}", timeout=30) as response:
            return bytes(response.read()).decode()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # the service is not known until the first batch is stored
            return ""
        raise


def _capabilities(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {name: int(value, 16) for name, value in re.findall(r"^Cap(\w+):\s+(\w+)$", status,
                                                               re.MULTILINE)}


def _agent_process(namespace: Child) -> psutil.Process:
    """The agent's process, found from outside (host pids) among the namespace's."""
    for proc in psutil.Process(namespace.pid).children(recursive=True):
        if "pyrometer.agent.cli" in proc.cmdline():
            return proc
    raise AssertionError(f"no agent under pid {namespace.pid}:\n{namespace.output()}")


def test_agent_beside_the_server_in_one_pid_namespace_with_only_sys_ptrace(
        tmp_path: Path, children: list[Child]) -> None:
    collector = _collector(tmp_path, children)
    script = tmp_path / f"server-{uuid.uuid4().hex[:8]}.py"
    script.write_text(BUSY)
    server = [sys.executable, str(script)]
    agent = ["setpriv", *ONLY_PTRACE, *_agent_argv(collector.ready.group("grpc"),
                                                   re.escape(script.name))]
    pod = start("pod", NEW_PID_NAMESPACE + [sys.executable, "-c", POD, json.dumps([server, agent])],
                r"profiling pid (?P<pid>\d+)", tmp_path, env=python_env(), timeout=90)
    children.append(pod)
    # pids as the namespace numbers them: pid 1 is POD, the server its first child
    assert int(pod.ready.group("pid")) < 10, pod.output()
    proc = _agent_process(pod)
    caps = _capabilities(proc.pid)
    assert proc.uids().effective == 0
    assert {caps[s] for s in ("Eff", "Prm", "Bnd", "Amb")} == {CAP_SYS_PTRACE}, caps

    api, deadline = collector.ready.group("http"), time.monotonic() + 90
    while "leaf (" not in (folded := _folded(api)):
        assert pod.proc.poll() is None, pod.output()
        assert time.monotonic() < deadline, f"no leaf in the flame graph:\n{folded}\n{pod.output()}"
        time.sleep(0.2)
    assert f"leaf ({script.name}:" in folded, folded


def test_agent_in_a_pid_namespace_of_its_own_names_the_setting_to_change(
        tmp_path: Path, children: list[Child]) -> None:
    script = tmp_path / f"server-{uuid.uuid4().hex[:8]}.py"
    script.write_text(BUSY)
    children.append(start("server", [sys.executable, str(script)], "target ready", tmp_path))
    match = re.escape(script.name)
    assert by_match(match).pid == children[-1].pid  # visible from here: the match is right
    done = subprocess.run(NEW_PID_NAMESPACE + _agent_argv("127.0.0.1:9", match),
                          capture_output=True, text=True, timeout=60, env=python_env())
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"pyrometer agent: error: no process has a command line "
                               f"matching {match!r}: the agent sees no process but its own")
    assert "shareProcessNamespace: true" in lines[0] and 'pid: "service:' in lines[0]
