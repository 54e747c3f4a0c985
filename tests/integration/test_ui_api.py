"""The web page's server side for real: the page and its files, the label listing, and
the vendored libraries against their lock file."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_api import LiveServer

from pyrometer.agent import cli
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.ui import vendor
from support.incident import SERVICE, fill_incident, incident_times

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    db = tmp_path_factory.mktemp("ui") / "ui.duckdb"
    incident = incident_times()
    fill_incident(db, incident)
    store = DuckDBStore(db)
    window = {"service": SERVICE, "from": incident.iso(incident.start_ns),
              "to": incident.iso(incident.end_ns)}
    with LiveServer(store, CollectorMetrics()) as server:
        yield server, window
    store.close()


def test_labels_list_what_the_data_holds(api: tuple[LiveServer, dict[str, str]]) -> None:
    server, window = api
    doc = server.get("/api/v1/labels", **window).json()
    assert (doc["instance"], doc["version"], doc["thread"]) == (["pod-a"], ["v1", "v2"], [""])
    assert doc["route"] == [{"route": "/v1/predict", "requests": 15000}]
    quiet = server.get("/api/v1/labels", service="nobody", **{"from": window["from"], "to": window["to"]})
    assert quiet.status == 200 and quiet.json()["version"] == []
    missing = server.get("/api/v1/labels")
    assert missing.status == 400 and missing.json()["parameter"] == "service"


@pytest.mark.parametrize(("path", "content_type"), [
    ("/", "text/html; charset=utf-8"),
    ("/ui/flame.js", "text/javascript; charset=utf-8"),
    ("/ui/vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    ("/ui/vendor/speedscope/index.html", "text/html; charset=utf-8"),
    ("/ui/vendor/speedscope/SourceCodePro-Regular.ttf-ILST5JV6.woff2", "font/woff2"),
])
def test_the_page_and_its_files(api: tuple[LiveServer, dict[str, str]], path: str,
                                content_type: str) -> None:
    server, _ = api
    reply = server.get(path)
    assert reply.status == 200 and reply.content_type == content_type
    assert "default-src 'self'" in reply.headers["content-security-policy"]
    assert reply.headers["x-content-type-options"] == "nosniff"


def test_a_reload_revalidates_the_files_without_fetching_them(
        api: tuple[LiveServer, dict[str, str]]) -> None:
    server, _ = api
    first = server.get("/ui/app.js")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache" and etag.startswith('"')
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/ui/app.js", headers={"If-None-Match": etag})
        again = conn.getresponse()
        assert again.status == 304 and again.read() == b""
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/vendor", "/ui/vendor/", "/ui/a//b.js",
                                  "/ui/%2e%2e/assets.py", "/ui/..%2fvendor.py"])
def test_anything_else_under_ui_is_a_404(api: tuple[LiveServer, dict[str, str]], path: str) -> None:
    server, _ = api
    assert server.raw(path).status == 404


def test_the_vendored_files_match_the_lock() -> None:
    assert vendor.check() == []
    for package in vendor.load_lock():
        assert package["integrity"].startswith("sha512-") and package["license"]
        assert any(dest.endswith("LICENSE") for dest in package["files"].values()), package["name"]


def test_a_tarball_that_differs_from_the_lock_is_refused(tmp_path: Path) -> None:
    [uplot] = [p for p in vendor.load_lock() if p["name"] == "uplot"]
    with pytest.raises(vendor.VendorError, match="integrity mismatch"):
        vendor.extract(uplot, b"not the tarball", tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_diff_per_request_divides_by_the_requests_of_each_window(
        api: tuple[LiveServer, dict[str, str]]) -> None:
    server, window = api
    incident = incident_times()  # the fixture's, to the 10 s it is rounded to
    spike, before = incident.spike_start_ns // 10**9, incident.spike_start_ns // 10**9 - 600
    reply = server.get("/api/v1/flamegraph/diff", service=SERVICE, per="request",
                       **{"from": str(spike), "to": str(spike + 60), "baseline_from": str(before),
                          "baseline_to": str(spike)})
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["normalisation"] == {"per": "request", "baseline": 6000.0, "target": 600.0}
    forward = next(c for c in doc["top_changes"] if c["function"].startswith("model_forward"))
    assert forward["delta"] == 0.0  # 7 samples per request before and during the spike
    empty = server.get("/api/v1/flamegraph/diff", service=SERVICE, per="request",
                       **{"from": str(spike), "to": str(spike + 60), "baseline_from": "1000000000",
                          "baseline_to": "1000000600"})
    assert empty.status == 400 and empty.json()["parameter"] == "per"
    assert "baseline window has none" in empty.json()["error"]


def test_the_cli_diffs_per_request_too(api: tuple[LiveServer, dict[str, str]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    server, _ = api
    incident = incident_times()
    spike = incident.spike_start_ns // 10**9
    args = ["diff", "--url", f"http://127.0.0.1:{server.port}", "--service", SERVICE,
            "--from", str(spike), "--to", str(spike + 60), "--baseline-from", str(spike - 600),
            "--baseline-to", str(spike),
            "--per", "request", "--format", "json"]
    assert cli.main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["normalisation"] == {"per": "request", "baseline": 6000.0, "target": 600.0}
