"""The collector's web page in a real browser, against real collector processes.

The recorded incident (tests/support/incident.py): 25 minutes of a service, a restart,
then a deploy of v2 whose requests are four times slower and spend their time in
`render_json_slow`, while the replayed GPU throttles. The page must show it all on its
timeline, list the spike with its causes, take one click from the spike to its flame
graph and to its diff, keep the view in the URL, ask for a token once where the
collector wants one, and never reach any host but the collector or log an error (the
`open_page` fixture asserts those two after every test).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from support.browser import READ_TOKEN, Served, Watch, page_url, screenshot, watch_context
from support.incident import HOT, SERVICE

pytestmark = pytest.mark.integration
TIMEOUT_MS = 60_000
# the spike's six 10 s windows: render_json_slow 2400 samples each, of 3250
HOT_MATCH = "Matched: 14,400 of 19,500 samples (73.85%)"


def loaded(page: Page) -> None:
    page.wait_for_selector("body[data-loaded]", timeout=TIMEOUT_MS)


def profile_loaded(page: Page, since: str | None) -> str:
    """Wait for a flame graph or diff newer than `since`; returns its stamp."""
    page.wait_for_function(
        "(since) => document.body.dataset.profileLoaded && document.body.dataset.profileLoaded !== since",
        arg=since or "", timeout=TIMEOUT_MS)
    return str(page.evaluate("document.body.dataset.profileLoaded"))


def test_the_page_is_served_at_the_root(collector: Served) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{collector.url}/", timeout=30) as reply:
        body = reply.read().decode()
        assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in reply.headers["Content-Security-Policy"]
    assert "ui/app.js" in body and "ui/vendor/uplot/uPlot.iife.min.js" in body


def test_the_timeline_draws_the_incident(open_page: tuple[Page, Watch], collector: Served) -> None:
    page, _ = open_page
    page.goto(page_url(collector))
    loaded(page)
    panels = {p.get_attribute("data-panel"): p for p in page.locator(".panel[data-panel]").all()}
    assert set(panels) == {"rate", "latency", "gpu-clock", "gpu-temperature", "gpu-power", "host",
                           "engine-batch", "engine-latency"}
    # 25 minutes in 5 s steps, every one with requests, GPU, engine and host readings
    assert {p.get_attribute("data-points") for p in panels.values()} == {"300"}
    # the restart and the deploy, drawn on every panel
    assert {p.get_attribute("data-markers") for p in panels.values()} == {"2"}
    assert panels["gpu-clock"].get_attribute("data-throttle") == "hw_thermal_slowdown"
    expect(panels["latency"].locator(".u-legend")).to_contain_text("TTFB p95 ms")
    expect(panels["gpu-clock"].locator(".replayed")).to_have_text("replayed, not measured")
    expect(panels["engine-batch"].locator(".u-legend")).to_contain_text("KV cache %")
    expect(panels["engine-latency"].locator(".u-legend")).to_contain_text("TTFT ms")
    deploy = page.locator("#events li[data-kind=deploy]")
    expect(deploy).to_have_text(re.compile(r"deploy v1 \u2192 v2 on pod-a"))
    expect(page.locator("#events li[data-kind=restart]")).to_have_count(1)
    spikes = page.locator("#spikes > li")
    expect(spikes).to_have_count(1)
    expect(spikes.first.locator(".cause")).to_contain_text("deploy")
    # the pipeline's stages, spike against baseline, under the spike's line
    expect(spikes.first.locator(".spike-stages")).to_contain_text(re.compile(r"^Stages: .+ per request"))
    expect(page.locator("#service")).to_have_value(SERVICE)
    expect(page.locator("#version option")).to_have_text(["all", "v1", "v2"])
    screenshot(page.locator("#timeline-section"), "timeline")


def test_a_spike_row_explains_and_leads_to_its_flame_graph(open_page: tuple[Page, Watch],
                                                           collector: Served) -> None:
    page, _ = open_page
    page.goto(page_url(collector))
    loaded(page)
    before = profile_loaded(page, None)
    row = page.locator("#spikes > li").first
    row.locator("summary").click()
    expect(row.locator(".candidate").first).to_contain_text("score")
    expect(row.locator(".candidate.checked").first).to_contain_text("checked, not the cause")
    screenshot(page.locator("#spikes-section"), "spikes")
    row.locator(".spike-flame").click()
    profile_loaded(page, before)
    incident = collector.incident
    assert f"sel={incident.spike_start_ns // 10**6}%2C{incident.spike_end_ns // 10**6}" in page.url
    first = page.locator("#top tbody tr").first
    expect(first.locator("td").first).to_have_text(f"{HOT} (app/render.py)")
    page.fill("#search", "render_json")
    expect(page.locator("#matched")).to_have_text(HOT_MATCH)
    expect(page.locator(".frame.match").first).to_have_text(f"{HOT} (app/render.py)")
    page.locator(".frame", has_text="respond (app/render.py)").first.hover()
    expect(page.locator("#tip")).to_contain_text("self: 0 samples")
    screenshot(page.locator("#profile-section"), "flamegraph")


def test_the_diff_marks_the_grown_frame(open_page: tuple[Page, Watch], collector: Served) -> None:
    page, _ = open_page
    page.goto(page_url(collector))
    loaded(page)
    before = profile_loaded(page, None)
    page.locator("#spikes > li .spike-diff").first.click()
    profile_loaded(page, before)
    assert "view=diff" in page.url and "base=" in page.url
    grown = page.locator(".frame", has_text=f"{HOT} (app/render.py)").first
    expect(grown).to_have_attribute("data-change", "grew")
    expect(page.locator(".frame", has_text="tokenize (app/text.py)").first).to_have_attribute(
        "data-change", "shrank")
    expect(page.locator("#top tbody tr").first.locator("td").first).to_have_text(f"{HOT} (app/render.py)")
    expect(page.locator("#colour")).to_have_value("share")
    # any two windows: drag on the timeline to move the baseline
    base = re.search(r"base=([0-9%C]+)", page.url)
    page.select_option("#drag-sets", "baseline")
    over = page.locator(".panel[data-panel=latency] .u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    assert box is not None and base is not None
    before = profile_loaded(page, None)
    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + 20, steps=5)
    page.mouse.up()
    profile_loaded(page, before)
    moved = re.search(r"base=([0-9%C]+)", page.url)
    assert moved is not None and moved.group(1) != base.group(1)
    expect(page.locator(".frame", has_text=f"{HOT} (app/render.py)").first).to_have_attribute(
        "data-change", "grew")
    # per request by default: the spike's requests are as many as the baseline's per second
    expect(page.locator("#profile-summary")).to_contain_text("Values are samples per request")
    screenshot(page.locator("#profile-section"), "diff")


def test_a_permalink_restores_the_view(open_page: tuple[Page, Watch], collector: Served) -> None:
    page, _ = open_page
    page.goto(page_url(collector))
    loaded(page)
    before = profile_loaded(page, None)
    page.locator("#spikes > li .spike-diff").first.click()
    profile_loaded(page, before)
    page.fill("#search", "render_json")
    expect(page.locator("#matched")).to_contain_text("of target")
    shared = page.url
    assert "q=render_json" in shared
    fresh = page.context.new_page()
    fresh.goto(shared)
    profile_loaded(fresh, None)
    loaded(fresh)
    assert fresh.url == shared
    expect(fresh.locator("#view-diff")).to_have_class(re.compile("active"))
    expect(fresh.locator("#search")).to_have_value("render_json")
    expect(fresh.locator("#matched")).to_have_text(page.locator("#matched").inner_text())
    expect(fresh.locator("#window-label")).to_have_text(page.locator("#window-label").inner_text())
    fresh.close()


def test_presets_and_drag_select_a_window(open_page: tuple[Page, Watch], collector: Served) -> None:
    page, _ = open_page
    page.goto(page_url(collector))
    loaded(page)
    before = profile_loaded(page, None)
    over = page.locator(".panel[data-panel=latency] .u-over")
    box = over.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + 20, steps=5)
    page.mouse.up()
    profile_loaded(page, before)
    assert "sel=" in page.url
    expect(page.locator("#window-label")).to_contain_text("selected window")
    page.click("#presets button[data-preset='1h']")
    loaded(page)
    assert "from=now-1h" in page.url and "sel=" not in page.url
    page.click("#pin")  # a link that shows the same hour later
    assert re.search(r"from=\d{4}-\d\d-\d\dT", page.url) and "now" not in page.url
    expect(page.locator("#presets button.active")).to_have_count(0)


def test_speedscope_opens_with_the_window_profile(open_page: tuple[Page, Watch], collector: Served) -> None:
    page, _ = open_page
    page.goto(page_url(collector))
    loaded(page)
    with page.context.expect_page(timeout=TIMEOUT_MS) as opened:
        page.click("#speedscope")
    viewer = opened.value
    viewer.wait_for_load_state()
    assert "/ui/vendor/speedscope/index.html#profileURL=blob" in viewer.url
    # speedscope names the loaded profile in its toolbar
    expect(viewer.get_by_text(SERVICE).first).to_be_visible(timeout=TIMEOUT_MS)


def test_downloads_carry_every_format(open_page: tuple[Page, Watch], collector: Served) -> None:
    page, _ = open_page
    page.goto(page_url(collector))
    loaded(page)
    formats = page.locator("#downloads a").evaluate_all("links => links.map(a => a.dataset.format)")
    assert formats == ["folded", "json", "speedscope", "pprof", "html"]
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        page.click("#downloads a[data-format=folded]")
    assert download.value.suggested_filename == f"{SERVICE}.folded.txt"
    assert f"{HOT} (app/render.py:3) 14400" in download.value.path().read_text()


def test_the_page_asks_for_a_read_token_once(browser: Browser, guarded_collector: Served) -> None:
    context, watch = watch_context(browser, guarded_collector.url)
    try:
        page = context.new_page()
        page.goto(page_url(guarded_collector))
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible(timeout=TIMEOUT_MS)
        page.fill("#token-input", READ_TOKEN)
        page.click("#token-ok")
        loaded(page)
        expect(page.locator("#spikes > li")).to_have_count(1)
        page.reload()
        loaded(page)  # the tab kept its token: no second prompt
        expect(dialog).to_be_hidden()
    finally:
        context.close()
    assert not watch.foreign, watch.foreign
    # the first calls answered 401 before the token was given: the browser logs those
    assert all("401" in e for e in watch.errors), watch.errors


def test_the_exports_draw_with_the_same_components(open_page: tuple[Page, Watch], collector: Served) -> None:
    page, _ = open_page
    incident = collector.incident
    window = {"service": SERVICE, "from": str(incident.spike_start_ns // 10**9),
              "to": str(incident.spike_end_ns // 10**9)}
    query = "&".join(f"{k}={v}" for k, v in window.items())
    page.goto(f"{collector.url}/api/v1/flamegraph?format=html&{query}")
    page.fill("#search", "render_json")
    expect(page.locator("#matched")).to_have_text(HOT_MATCH)
    expect(page.locator("#top tbody tr").first.locator("td").first).to_have_text(f"{HOT} (app/render.py)")
    page.goto(f"{collector.url}/api/v1/flamegraph/diff?format=html&{query}")
    expect(page.locator(".frame", has_text=f"{HOT} (app/render.py)").first).to_have_attribute(
        "data-change", "grew")


def test_top_functions_count_a_recursive_function_once_per_sample(open_page: tuple[Page, Watch],
                                                                 collector: Served) -> None:
    page, _ = open_page
    page.goto(f"{collector.url}/")
    loaded(page)
    # a -> b -> a -> c (10 samples) and a -> d (5): a is on every sample once in total
    rows = page.evaluate("""() => PyrometerFlame.topFunctions({name: "svc", value: 15, children: [
        {name: "a", value: 15, children: [
          {name: "b", value: 10, children: [{name: "a", value: 10, children: [
            {name: "c", value: 10, children: []}]}]},
          {name: "d", value: 5, children: []}]}]})""")
    found = {r["name"]: (r["self"], r["total"]) for r in rows}
    assert found == {"a": (0, 15), "b": (0, 10), "c": (10, 10), "d": (5, 5)}
