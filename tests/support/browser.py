"""Test support: fixtures of the browser tests (tests/browser/conftest.py imports them).

Debian's chromium driven by Playwright, against real collector processes serving a
recorded incident (tests/support/incident.py).

Playwright's own browser download is not reachable where CI runs, so the tests launch
the system's chromium (`make browser` installs it with apt-get; PYROMETER_CHROMIUM
names another binary). Without one the tests skip, saying how to get it.

Every page runs in a context that intercepts every request: one to any host but the
collector under test is refused and recorded, and the test fails on it, as it does on
any console error or uncaught exception of the page.
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Locator, Page, Route, sync_playwright

from pyrometer.collector.procs import Child, python_env, start
from support.incident import Incident, fill_incident, incident_times

CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
READY = r"ingest on (?P<grpc>\S+) .*API on (?P<http>http://\S+)"
WRITE_TOKEN = "write-token-for-the-browser-test"
READ_TOKEN = "read-token-for-the-browser-test"
SCREENSHOTS = os.environ.get("PYROMETER_SCREENSHOTS")
# CI runs as root, where chromium's sandbox cannot start; containers often have a small
# /dev/shm, which chromium would otherwise fill and crash on
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    named = os.environ.get("PYROMETER_CHROMIUM")
    if named:
        return named
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Served:
    url: str
    incident: Incident
    child: Child


@dataclass
class Watch:
    """What a page did that it must not: requests elsewhere, console errors."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


def _collector(tmp: Path, db: Path, name: str, *extra: str) -> Child:
    return start(name, CLI + ["collector", "--db", str(db), "--grpc-listen", "127.0.0.1:0",
                              "--http-listen", "127.0.0.1:0", "--retention", "off", *extra],
                 READY, tmp, env=python_env(), timeout=120)


@pytest.fixture(scope="session")
def incident_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Incident]:
    tmp = tmp_path_factory.mktemp("incident")
    incident = incident_times()
    db = tmp / "incident.duckdb"
    fill_incident(db, incident)
    return db, incident


@pytest.fixture(scope="session")
def collector(incident_db: tuple[Path, Incident], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Served]:
    """A real collector process over the recorded incident, without tokens."""
    db, incident = incident_db
    child = _collector(tmp_path_factory.mktemp("open"), db, "collector")
    try:
        yield Served(child.ready.group("http"), incident, child)
    finally:
        child.stop()


@pytest.fixture(scope="session")
def guarded_collector(incident_db: tuple[Path, Incident], tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[Served]:
    """A second collector, with a write and a read token, over a copy of the incident
    (DuckDB lets one process open a file)."""
    db, incident = incident_db
    tmp = tmp_path_factory.mktemp("guarded")
    copy = tmp / "incident.duckdb"
    shutil.copyfile(db, copy)
    child = _collector(tmp, copy, "guarded", "--token", WRITE_TOKEN, "--read-token", READ_TOKEN)
    try:
        yield Served(child.ready.group("http"), incident, child)
    finally:
        child.stop()


# per module, not per session: Playwright's sync API runs an event loop in this thread
# while it is open, and the tests after the browser tests call asyncio.run
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium on PATH: `make browser` installs Debian's (as root), or set "
                    "PYROMETER_CHROMIUM to a chromium binary")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def watch_context(browser: Browser, url: str) -> tuple[BrowserContext, Watch]:
    """A browser context that lets requests reach `url`'s origin (and blob:/data:) only."""
    origin = urllib.parse.urlsplit(url).netloc
    watch = Watch(origin)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)

    def route(r: Route) -> None:
        requested = r.request.url
        watch.requests.append(requested)
        parts = urllib.parse.urlsplit(requested)
        if parts.scheme in ("blob", "data") or (parts.scheme == "http" and parts.netloc == origin):
            r.continue_()
        else:
            watch.foreign.append(requested)
            r.abort()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watch.errors.append(f"console: {message.text} at {message.location}")

    context.route("**/*", route)
    context.on("console", console)
    context.on("weberror", lambda error: watch.errors.append(f"uncaught: {error.error}"))
    return context, watch


@pytest.fixture
def open_page(browser: Browser, collector: Served) -> Iterator[tuple[Page, Watch]]:
    """A page in a watched context; after the test, nothing foreign and no errors."""
    context, watch = watch_context(browser, collector.url)
    page = context.new_page()
    try:
        yield page, watch
    finally:
        context.close()
    assert not watch.foreign, f"requests to other hosts than the collector: {watch.foreign}"
    assert not watch.errors, f"console errors: {watch.errors}"


def page_url(served: Served, **params: str) -> str:
    incident = served.incident
    query = {"service": "checkout-model", "from": incident.iso(incident.start_ns),
             "to": incident.iso(incident.end_ns), **params}
    return f"{served.url}/?{urllib.parse.urlencode(query)}"


def screenshot(target: Page | Locator, name: str) -> None:
    """Save a screenshot to $PYROMETER_SCREENSHOTS/`name`.png when that is set."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page = target if isinstance(target, Page) else target.page
        page.add_style_tag(content=".bar { position: static !important; }")  # not over the shot
        target.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))
