"""Pyroscope-compatible ingest against a real collector process: `POST /ingest` (folded
and pprof), the Connect call `push.v1.PusherService/Push` in both encodings, Pyroscope's
own Python SDK pushing from a real target, and malformed uploads that must store nothing."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.sink import decode_push
from pyrometer.collector.procs import Child, python_env, start
from pyrometer.proto import profile_pb2
from support.pprof_builder import READ, WRITE, call, pprof, push_request

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
READY = r"API on (?P<http>https?://\S+)"
SPAN_NS = 10 * 10**9


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    tmp = tmp_path_factory.mktemp("pyroscope-ingest")
    (tmp / "token").write_text(WRITE)
    child = start("collector", CLI + ["collector", "--db", str(tmp / "c.duckdb"), "--grpc-listen",
                                      "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                      "--token-file", str(tmp / "token")],
                  READY, tmp, env=python_env(PYROMETER_READ_TOKEN=READ))
    try:
        yield child
    finally:
        assert child.stop(signal.SIGTERM, timeout=30) == 0, child.output()


def samples(base: str, service: str, **filters: str) -> int:
    """The service's total over the last hour and the next minute, as /api/v1/flamegraph says."""
    now = time.time()
    query = "&".join(f"{k}={v}" for k, v in {"service": service, "from": str(int(now - 3600)),
                                              "to": str(int(now + 60)), **filters}.items())
    status, headers, _ = call(base, "GET", f"/api/v1/flamegraph?{query}&format=folded", token=READ)
    assert status in (200, 404)
    return int(headers.get("Pyrometer-Samples", "0"))


def recent_s() -> int:
    return int(time.time()) - 120


def test_ingest_folded_and_pprof_land_under_their_labels(collector: Child) -> None:
    base = collector.ready.group("http")
    start = recent_s()
    name = "fold-svc.cpu{version=1.0,instance=pod-a,team=ml}"
    status, _, _ = call(base, "POST", f"/ingest?name={name}&from={start}&until={start + 10}"
                        "&format=folded&sampleRate=100", b"main;work 30\nmain;idle 5\n")
    assert status == 200
    assert samples(base, "fold-svc", version="1.0", instance="pod-a") == 35
    assert samples(base, "fold-svc", version="2.0") == 0

    raw = pprof({("main", "infer"): 12}, time_ns=start * 10**9, duration_ns=SPAN_NS)
    status, headers, _ = call(base, "POST", "/ingest?name=pprof-svc.cpu{version=3}&format=pprof", raw)
    assert status == 200 and headers["Pyrometer-Dropped-Profiles"] == "0"
    # the Go SDK's way: the profile as the `profile` part of a multipart form
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"p.pprof\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n")
    form = head.encode() + raw + f"\r\n--{boundary}--\r\n".encode()
    status, _, _ = call(base, "POST", "/ingest?name=pprof-svc.cpu{version=3}&format=pprof", form,
                        {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200
    assert samples(base, "pprof-svc", version="3") == 24
    # a memory profile is acknowledged and dropped, not retried for ever by the SDK
    status, headers, _ = call(base, "POST", f"/ingest?name=mem-svc.alloc_space&from={start}&format=folded",
                              b"main 100\n")
    assert status == 200 and headers["Pyrometer-Dropped-Profiles"] == "1"
    assert samples(base, "mem-svc") == 0


def test_push_in_both_encodings(collector: Child) -> None:
    base = collector.ready.group("http")
    now_ns = time.time_ns() - 60 * 10**9
    labels = {"__name__": "process_cpu", "service_name": "push-svc", "version": "9", "instance": "i1"}
    message = push_request([(labels, [pprof({("main", "a"): 4}, time_ns=now_ns, duration_ns=SPAN_NS)])])
    status, headers, body = call(base, "POST", "/push.v1.PusherService/Push",
                                 gzip.compress(message.SerializeToString()),
                                 {"Content-Type": "application/proto", "Content-Encoding": "gzip"})
    assert (status, headers["Content-Type"], body) == (200, "application/proto", b"")
    status, headers, body = call(base, "POST", "/push.v1.PusherService/Push",
                                 json_format.MessageToJson(message).encode(),
                                 {"Content-Type": "application/json"})
    assert (status, json.loads(body)) == (200, {})
    assert samples(base, "push-svc", version="9", instance="i1") == 8


def test_auth_is_the_same_as_grpc_ingest(collector: Child) -> None:
    base = collector.ready.group("http")
    headers = {"Content-Type": "application/proto"}
    assert call(base, "POST", "/push.v1.PusherService/Push", b"", headers, token=None)[0] == 401
    assert call(base, "POST", "/push.v1.PusherService/Push", b"", headers, token=READ)[0] == 403
    assert call(base, "POST", "/ingest?name=x.cpu", b"main 1\n", token=READ)[0] == 403


# --- malformed uploads: refused, nothing stored ----------------------------------------

def _valid_pprof(start_ns: int) -> profile_pb2.Profile:
    return profile_pb2.Profile.FromString(
        pprof({("main", "work"): 3}, time_ns=start_ns, duration_ns=SPAN_NS, compress=False))


def _corrupt(profile: profile_pb2.Profile, how: str, bad: int) -> bytes:
    if how == "location":
        profile.sample[0].location_id.append(1000 + bad)
    elif how == "function":
        profile.location[0].line[0].function_id = 1000 + bad
    elif how == "string":
        profile.function[0].name = len(profile.string_table) + bad
    elif how == "negative":
        profile.sample[0].value[0] = -1 - bad
    elif how == "values":
        profile.sample[0].value.append(bad)
    elif how == "future":
        profile.time_nanos = time.time_ns() + (2 + bad) * 3600 * 10**9
    elif how == "deep":
        profile.sample[0].location_id.extend([1] * (600 + bad))
    return gzip.compress(profile.SerializeToString())


PPROF_KINDS = ["location", "function", "string", "negative", "values", "future", "deep"]
bad_pprof = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from(PPROF_KINDS), st.integers(0, 50)).map(
        lambda t: _corrupt(_valid_pprof(time.time_ns() - 60 * 10**9), *t)),
    st.integers(1, 60).map(lambda n: gzip.compress(_valid_pprof(time.time_ns()).SerializeToString())[:n]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=bad_pprof, via_push=st.booleans(), with_good=st.booleans())
def test_malformed_uploads_are_refused_and_store_nothing(collector: Child, raw: bytes, via_push: bool,
                                                         with_good: bool) -> None:
    base = collector.ready.group("http")
    before = call(base, "GET", "/api/v1/services", token=READ)[2]
    good = pprof({("main",): 5}, time_ns=time.time_ns() - 60 * 10**9, duration_ns=SPAN_NS)
    if via_push:
        series = [({"service_name": "fuzz-svc"}, [good] if with_good else []),
                  ({"service_name": "fuzz-svc"}, [raw])]
        status, _, body = call(base, "POST", "/push.v1.PusherService/Push",
                               push_request(series).SerializeToString(),
                               {"Content-Type": "application/proto"})
        assert status in (400, 429), body
        assert json.loads(body)["code"] in ("invalid_argument", "resource_exhausted")
    else:
        status, _, body = call(base, "POST", "/ingest?name=fuzz-svc.cpu&format=pprof", raw)
        assert status in (400, 413), body
        assert json.loads(body)["error"]
    assert call(base, "GET", "/api/v1/services", token=READ)[2] == before


@pytest.mark.parametrize(("query", "body"), [
    ("name=&format=folded", b"main 1\n"),
    ("name=s.cpu{a}&format=folded", b"main 1\n"),
    ("name=s.cpu&format=trie", b"main 1\n"),
    ("name=s.cpu&format=folded&from=yesterday", b"main 1\n"),
    ("name=s.cpu&format=folded&sampleRate=-5", b"main 1\n"),
    ("name=s.cpu&format=folded", b"main;work many\n"),
    ("name=s.cpu&format=folded&from=1", b"main 1\n"),  # 1970: before any profiler ran
])
def test_bad_ingest_parameters_are_400s(collector: Child, query: str, body: bytes) -> None:
    base = collector.ready.group("http")
    before = call(base, "GET", "/api/v1/services", token=READ)[2]
    status, _, answer = call(base, "POST", f"/ingest?{query}", body)
    assert status == 400 and json.loads(answer)["error"]
    assert call(base, "GET", "/api/v1/services", token=READ)[2] == before


# --- Pyroscope's own Python SDK, through a proxy that counts what it sends ------------

TARGET = """
import sys, time
import pyroscope

pyroscope.configure(application_name="sdk-svc", server_address=sys.argv[1], sample_rate=100,
                    tags={"version": "7.0", "instance": "pod-1"}, upload_interval=1,
                    http_headers={"Authorization": "Bearer " + sys.argv[2]})

def hot_loop():
    return sum(i * i for i in range(20000))

print("target ready", flush=True)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    hot_loop()
pyroscope.shutdown()
print("target done", flush=True)
"""


class CountingProxy(ThreadingHTTPServer):
    """Forwards each push to the collector and counts the samples in those it accepted."""

    # handler threads are joined by server_close(), so no push is still in flight afterwards
    daemon_threads = False

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.accepted_samples = 0
        self.statuses: list[int] = []
        self.lock = threading.Lock()


class _ProxyHandler(BaseHTTPRequestHandler):
    server: CountingProxy

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        status, _, answer = call(self.server.upstream, "POST", self.path, body, headers, token=None)
        with self.server.lock:
            self.server.statuses.append(status)
            if status == 200:
                self.server.accepted_samples += sum(n for _, n, _ in decode_push(
                    body, self.headers.get("Content-Encoding", "")))
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_pyroscope_sdk_pushes_land_and_count_the_same(collector: Child, tmp_path: Path) -> None:
    base = collector.ready.group("http")
    proxy = CountingProxy(base)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        script = tmp_path / "sdk_target.py"
        script.write_text(TARGET)
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        done = subprocess.run([sys.executable, str(script), url, WRITE, "3"], capture_output=True,
                              text=True, timeout=120, env=python_env())
        assert done.returncode == 0 and "target done" in done.stdout, done.stderr[-2000:]
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()
    assert proxy.statuses and set(proxy.statuses) == {200}, proxy.statuses
    assert proxy.accepted_samples > 0
    assert samples(base, "sdk-svc", version="7.0", instance="pod-1") == proxy.accepted_samples
    _, _, folded = call(base, "GET", f"/api/v1/flamegraph?service=sdk-svc&from={recent_s() - 600}"
                        f"&to={int(time.time()) + 60}&format=folded", token=READ)
    assert b"hot_loop" in folded
