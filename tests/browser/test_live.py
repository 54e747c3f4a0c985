"""The page over live data: a real agent profiling a real target, shipping to a real
collector, and the page's default view (the last hour) showing the target's hot function.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from pyrometer.collector.procs import Child, python_env, start
from support.browser import CLI, READY, watch_context

pytestmark = pytest.mark.integration
SERVICE = "live-model"
TARGET = """
def hot_leaf_for_the_page(n):
    total = 0
    for i in range(n):
        total += i * i
    return total

def serve():
    while True:
        hot_leaf_for_the_page(20000)

print("target ready", flush=True)
serve()
"""


def _samples(api: str) -> int:
    with urllib.request.urlopen(f"{api}/api/v1/services", timeout=30) as reply:
        found = [s["samples"] for s in json.load(reply)["services"] if s["name"] == SERVICE]
    return int(found[0]) if found else 0


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("live")
    (tmp / "target.py").write_text(TARGET)
    children: list[Child] = []
    try:
        collector = start("collector", CLI + ["collector", "--db", str(tmp / "live.duckdb"),
                                              "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
                          READY, tmp, env=python_env(), timeout=120)
        children.append(collector)
        target = start("target", [sys.executable, str(tmp / "target.py")], "target ready", tmp)
        children.append(target)
        children.append(start("agent", CLI + ["agent", "--collector", collector.ready.group("grpc"),
                                              "--service", SERVICE, "--pid", str(target.pid),
                                              "--window", "2"],
                              "profiling pid", tmp, env=python_env(), timeout=120))
        api = collector.ready.group("http")
        # readiness: two windows' worth of samples stored, polled through the API
        deadline = time.monotonic() + 120
        while _samples(api) < 200:
            assert time.monotonic() < deadline, collector.output()[-3000:]
            time.sleep(0.2)
        yield api
    finally:
        for child in reversed(children):
            child.stop()


def test_the_default_view_shows_what_the_agent_profiled(browser: Browser, live: str) -> None:
    context, watch = watch_context(browser, live)
    try:
        page = context.new_page()
        page.goto(f"{live}/")  # no parameters: the first service, the last hour
        page.wait_for_selector("body[data-loaded]", timeout=60_000)
        expect(page.locator("#service")).to_have_value(SERVICE)
        assert "from=now-1h" in page.url and f"service={SERVICE}" in page.url
        expect(page.locator("#presets button[data-preset='1h']")).to_have_class("active")
        first = page.locator("#top tbody tr").first.locator("td").first
        expect(first).to_contain_text("hot_leaf_for_the_page")
        page.fill("#search", "hot_leaf")
        expect(page.locator("#matched")).to_contain_text("Matched:")
    finally:
        context.close()
    assert not watch.foreign, watch.foreign
    assert not watch.errors, watch.errors
