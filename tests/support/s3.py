"""A throwaway S3-compatible server for the lake's tests: moto in server mode, a process of
its own on a free port of 127.0.0.1, its buckets and objects in that process's memory.

moto comes with the `lake-test` extra, which the Makefile installs into .venv-lake only.
Readiness is waited on by polling the port over HTTP until moto answers, never a fixed
sleep. Buckets are made and listed with plain HTTP: moto in server mode checks no
signature, and the lake's own requests (DuckDB's httpfs) are the signed ones under test.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from support.request_servers import free_port

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_START_TIMEOUT_S = 60.0


@dataclass
class S3Server:
    """One running moto server; `env()` is what a collector needs to use it."""

    proc: subprocess.Popen[bytes]
    endpoint: str  # http://127.0.0.1:PORT
    log_path: Path

    def env(self) -> dict[str, str]:
        """The AWS variables of a collector storing here (moto takes any keys)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "pyrometer-test",
                "AWS_SECRET_ACCESS_KEY": "pyrometer-test-secret", "AWS_REGION": "us-east-1"}

    def create_bucket(self, name: str) -> None:
        """A new bucket (S3 wants 3 to 63 characters: lower case, digits, dots, hyphens)."""
        _call("PUT", f"{self.endpoint}/{name}")

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under `prefix` in `bucket`, as S3's ListObjectsV2 gives them."""
        keys: list[str] = []
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            page = ET.fromstring(_call("GET", f"{self.endpoint}/{bucket}?"
                                       + urllib.parse.urlencode(query)))
            keys += [node.text or "" for node in page.iter(f"{_NS}Key")]
            token = page.findtext(f"{_NS}NextContinuationToken") or ""
            if page.findtext(f"{_NS}IsTruncated") != "true" or not token:
                return keys

    def rss_bytes(self) -> int:
        """The server's resident memory (it holds every object it was sent)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log_path.unlink(missing_ok=True)


def _call(method: str, url: str) -> bytes:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
        return body


def start_s3() -> S3Server:
    """A started moto server; raises RuntimeError (with the reason) when it cannot start."""
    if importlib.util.find_spec("moto") is None:
        raise RuntimeError("moto is not installed: the lake's S3 tests run in .venv-lake "
                           "(`make test-lake` installs pyrometer[lake,lake-test] there)")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.mkstemp(prefix="pyrometer-moto-", suffix=".log")[1])
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    server = S3Server(proc, endpoint, log_path)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        try:
            _call("GET", f"{endpoint}/")  # moto answers its root once it serves
            return server
        except (urllib.error.URLError, ConnectionError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            output = log_path.read_text(errors="replace")[-2000:]
            server.stop()
            raise RuntimeError(f"moto did not start on {endpoint} (exit code {proc.poll()}):\n{output}")
        time.sleep(0.05)  # the next poll, not a wait for readiness
