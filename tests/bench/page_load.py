"""Row 7 of `make bench`: the web page over a day of one service, in a real browser.

A measurement, not a test. Run from the repository root:

    .venv/bin/python tests/bench/page_load.py [--size tiny|full] [--json OUT] [--workdir DIR]

A day of one service (query_fill.py, one instance) is written straight into the
collector's tables; a real collector serves it, and chromium (driven by Playwright, as
in tests/browser) opens the page on the whole day: labels, timeline series, events,
the spike analysis of the day and the day's flame graph. Timed from the navigation to
the moment the page says it has loaded everything (it is interactive then): once cold
(a fresh collector and browser), then the median of warm reloads. The target is a
second warm.
"""

from __future__ import annotations

import statistics
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import common  # noqa: E402
from bench.query_fill import SECOND, SERVICE, WINDOW_S, Day, fill  # noqa: E402

TITLE = "Web page"
TARGET_S = 1.0
_H = 3600
SIZES = {"tiny": (10 * 60, 3), "full": (24 * _H, 5)}  # seconds of data, warm loads
LOAD_TIMEOUT_MS = 120_000


def _day(seconds: int) -> Day:
    window = WINDOW_S * SECOND
    return Day(instances=1, seconds=seconds, request_rate=20, stacks=2000,
               end_ns=time.time_ns() // window * window, deploy_ago_s=seconds // 3,
               deploy_stagger_s=5, spike_ago_s=min(seconds // 4, 4 * 60), spike_s=60)


def measure(size: str, work: Path) -> dict[str, Any]:
    from support.browser import chromium_path  # the tests' own launcher settings

    chromium = chromium_path()
    if chromium is None:
        raise SystemExit("no chromium: run `make browser` (or set PYROMETER_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    seconds, warm_runs = SIZES[size]
    day = _day(seconds)
    db = work / "page.duckdb"
    fill(db, day)
    collector = common.start_collector(work, "--retention", "off", db=db)
    try:
        api = collector.ready.group("http")
        query = urllib.parse.urlencode({
            "service": SERVICE, "from": str(day.start_ns // SECOND), "to": str(day.end_ns // SECOND)})
        url = f"{api}/?{query}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                loads = [_load(page, url) for _ in range(1 + warm_runs)]
                api_ms = [float(page.inner_text("#status").split()[2])]
            finally:
                browser.close()
    finally:
        collector.stop()
    warm = statistics.median(loads[1:])
    return {"seconds_of_data": seconds, "instances": 1, "cold_s": round(loads[0], 3),
            "warm_s": round(warm, 3), "warm_runs": [round(x, 3) for x in loads[1:]],
            "last_api_ms": api_ms[0], "target_s": TARGET_S, "met": warm <= TARGET_S}


def _load(page: Any, url: str) -> float:
    began = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("body[data-loaded]", timeout=LOAD_TIMEOUT_MS)
    return time.perf_counter() - began


def markdown(result: dict[str, Any]) -> str:
    hours = result["seconds_of_data"] / _H
    verdict = "meets" if result["met"] else "misses"
    return "\n".join([
        f"## 7. {TITLE}", "",
        f"The collector's page (`/`) in chromium over {hours:g} h of one service, the whole span "
        "picked: labels, timeline series, events, the spike analysis and the flame graph, timed "
        "from navigation until the page has drawn everything (`tests/bench/page_load.py`).", "",
        "| load | seconds |", "|---|---|",
        f"| cold (fresh collector and browser) | {result['cold_s']:.2f} |",
        f"| warm (median of {len(result['warm_runs'])}) | {result['warm_s']:.2f} |", "",
        f"Warm, it {verdict} the target of {result['target_s']:g} s; the slowest API call set of the "
        f"last load took {result['last_api_ms']:.0f} ms in the page's own measure.", ""])


if __name__ == "__main__":
    sys.exit(common.main(__doc__, measure, markdown))
