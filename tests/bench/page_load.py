"""Row 7 of `make bench`: the web page over a day of one service, in a real browser.

A measurement, not a test. Run from the repository root:

    .venv/bin/python tests/bench/page_load.py [--size tiny|full] [--json OUT] [--workdir DIR]

A day of one service (query_fill.py, one instance) is written straight into the
collector's tables; a real collector serves it, and chromium (driven by Playwright, as
in tests/browser) opens the page on the whole day: labels, timeline series, events,
the spike analysis of the day and the day's flame graph. Timed from the navigation to
the marks the page sets: interactive (pickers and timeline drawn, so it answers picks,
clicks and drags), spikes listed (the spike analysis of the range, which reads every
request of the range and its baseline) and loaded (the flame graph too); once cold (a
fresh collector and browser), then the median of warm reloads. The target is
interactive within a second, warm.
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
    from support.browser import CHROMIUM_ARGS, chromium_path  # the tests' own launcher settings

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
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                loads = [_load(page, url) for _ in range(1 + warm_runs)]
            finally:
                browser.close()
    finally:
        collector.stop()
    warm = {mark: statistics.median(load[mark] for load in loads[1:]) for mark in MARKS}
    return {"seconds_of_data": seconds, "instances": 1,
            **{f"cold_{mark}_s": round(loads[0][mark], 3) for mark in MARKS},
            **{f"warm_{mark}_s": round(warm[mark], 3) for mark in MARKS},
            "warm_runs": [{k: round(v, 3) for k, v in load.items()} for load in loads[1:]],
            "target_s": TARGET_S, "met": warm["interactive"] <= TARGET_S}


# each stage the page marks on its body, and the attribute with its time (ms since navigation)
MARKS = {"interactive": "interactiveAt", "spikes": "spikesLoadedAt", "loaded": "loadedAt"}


def _load(page: Any, url: str) -> dict[str, float]:
    """Seconds from navigation until each of the page's marks, as the page timed them."""
    page.goto(url)
    page.wait_for_selector("body[data-loaded]", timeout=LOAD_TIMEOUT_MS)
    stamps = page.evaluate("() => ({...document.body.dataset})")
    return {mark: float(stamps[key]) / 1000 for mark, key in MARKS.items()}


def markdown(result: dict[str, Any]) -> str:
    hours = result["seconds_of_data"] / _H
    verdict = "meets" if result["met"] else "misses"
    return "\n".join([
        f"## 7. {TITLE}", "",
        f"The collector's page (`/`) in chromium over {hours:g} h of one service, the whole span "
        "picked, timed by the page from navigation: until it answers picks, clicks and drags "
        "(pickers and timeline drawn), until the spikes are listed, and until everything (the "
        "flame graph too) is drawn (`tests/bench/page_load.py`).", "",
        "| load | interactive (s) | spikes listed (s) | everything drawn (s) |", "|---|---|---|---|",
        *(f"| {label} | {result[f'{when}_interactive_s']:.2f} | {result[f'{when}_spikes_s']:.2f} | "
          f"{result[f'{when}_loaded_s']:.2f} |"
          for when, label in (("cold", "cold (fresh collector and browser)"),
                              ("warm", f"warm (median of {len(result['warm_runs'])})"))), "",
        f"Warm, it {verdict} the target of {result['target_s']:g} s to interactive (pickers and "
        "timeline drawn). The spike analysis of the range (row 5) and the flame graph of the whole "
        "span are the slow calls; the page shows each when it comes.", ""])


if __name__ == "__main__":
    sys.exit(common.main(__doc__, measure, markdown))
