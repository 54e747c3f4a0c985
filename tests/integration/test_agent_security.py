"""A real `pyrometer agent` against a real collector with mutual TLS and a token."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from pyrometer.collector.procs import Child, python_env, start
from support.certs import make_pki

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
TOKEN = "agent-write-token-0123456789"
TARGET = """
def spin():
    while True:
        sum(i * i for i in range(10000))
print("target ready", flush=True)
spin()
"""


def _samples(api: str, service: str, ca: Path) -> int:
    import ssl

    query = urllib.parse.urlencode({"service": service, "from": "now-10m", "to": "now+1m",
                                    "format": "json"})
    request = urllib.request.Request(f"{api}/api/v1/flamegraph?{query}",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return int(json.loads(response.read())["total"])
    except urllib.error.HTTPError as err:
        if err.code == 404:  # nothing stored for the service yet
            return 0
        raise


def test_agent_ships_over_mtls_with_its_token_and_a_wrong_token_stores_nothing(
        tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "target.py").write_text(TARGET)
    children: list[Child] = []
    try:
        collector = start("collector", CLI + [
            "collector", "--db", str(tmp_path / "c.duckdb"), "--grpc-listen", "127.0.0.1:0",
            "--http-listen", "127.0.0.1:0", "--tls-cert", str(pki.server_cert),
            "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca)],
            r"ingest on (?P<grpc>\S+) .*API on (?P<http>https://\S+)", tmp_path,
            env=python_env(PYROMETER_TOKEN=TOKEN))
        children.append(collector)
        target = start("target", [sys.executable, str(tmp_path / "target.py")], "target ready",
                       tmp_path)
        children.append(target)
        tls = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert),
               "--tls-key", str(pki.client_key), "--window", "2", "--gpu", "off",
               "--requests-listen", "off", "--pid", str(target.pid),
               "--collector", collector.ready.group("grpc")]
        good = start("agent-good", CLI + ["agent", "--service", "good", "--token", TOKEN,
                                          "--spool-dir", "off", *tls],
                     "profiling pid", tmp_path, env=python_env())
        bad = start("agent-bad", CLI + ["agent", "--service", "bad", "--token", "wrong-token",
                                        "--spool-dir", "off", *tls],
                    "profiling pid", tmp_path, env=python_env())
        children += [good, bad]
        api = collector.ready.group("http")
        deadline = time.monotonic() + 90
        while _samples(api, "good", pki.ca) < 100:
            assert time.monotonic() < deadline, good.output()
            time.sleep(0.2)
        while "refused this agent's token" not in bad.output():
            assert time.monotonic() < deadline, bad.output()
            time.sleep(0.2)
        assert _samples(api, "bad", pki.ca) == 0
        for agent in (good, bad):
            agent.stop(signal.SIGTERM, timeout=30)
        assert TOKEN not in collector.output() + good.output() + bad.output()
        assert "wrong-token" not in collector.output() + bad.output()
    finally:
        for child in reversed(children):
            child.stop(signal.SIGKILL)
