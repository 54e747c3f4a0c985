"""`pprof -top URL` against the collector: the real pprof fetches a flame graph's pprof
format over HTTP and reads it (Go's `go tool pprof`, or a standalone `pprof` binary;
Debian's golang-go provides the first). Skipped with the reason where neither is."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_api import LiveServer
from test_spikes_api import T0, fill

from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.duckdb.backend import DuckDBStore

pytestmark = pytest.mark.integration


def pprof_command() -> list[str] | None:
    if shutil.which("pprof"):
        return ["pprof"]
    if shutil.which("go"):
        return ["go", "tool", "pprof"]
    return None


PPROF = pprof_command()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    store = DuckDBStore(tmp_path_factory.mktemp("pprof") / "pyrometer.duckdb")
    fill(store)
    with LiveServer(store, CollectorMetrics()) as server:
        yield server
    store.close()


def test_the_pprof_answer_names_a_file_and_is_gzipped_protobuf(api: LiveServer) -> None:
    reply = api.get("/api/v1/flamegraph", service="svc", format="pprof",
                    **{"from": str(T0), "to": str(T0 + 660)})
    assert reply.status == 200 and reply.body[:2] == b"\x1f\x8b"
    assert reply.headers["content-disposition"] == 'attachment; filename="svc.pb.gz"'


@pytest.mark.skipif(PPROF is None, reason="no pprof: install Debian's golang-go (go tool pprof) "
                    "or a pprof binary to run it against the collector")
def test_pprof_top_reads_the_collector_over_http(api: LiveServer, tmp_path: Path) -> None:
    assert PPROF is not None
    query = urllib.parse.urlencode({"service": "svc", "from": str(T0), "to": str(T0 + 660),
                                    "format": "pprof"})
    url = f"http://127.0.0.1:{api.port}/api/v1/flamegraph?{query}"
    env = {**os.environ, "HOME": str(tmp_path), "PPROF_TMPDIR": str(tmp_path),
           "GOCACHE": str(tmp_path / "gocache"), "GOFLAGS": "-mod=mod"}
    done = subprocess.run([*PPROF, "-top", url], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    # the hottest function of the data is model_forward (100-300 samples a window)
    top = [line for line in done.stdout.splitlines() if line.strip().endswith("model_forward")]
    assert top, done.stdout
    assert "Type: cpu" in done.stdout or "Type: samples" in done.stdout, done.stdout
