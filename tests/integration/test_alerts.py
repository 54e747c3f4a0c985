"""Notifications: a real webhook receiver on 127.0.0.1 gets exactly one notice per spike,
in each format, with the right top cause, and one per SLO state change; failed POSTs are
retried, refused ones are not; the alerts file is checked before the collector starts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_slos_api import BURST
from test_slos_api import OBJECTIVES as SLO_OBJECTIVES
from test_slos_api import fill as fill_slo
from test_spikes_api import SPIKE_AT, T0
from test_spikes_api import fill as fill_spike

from pyrometer.collector.alerts.config import AlertConfig, AlertConfigError, Webhook, load_alerts
from pyrometer.collector.alerts.watcher import AlertWatcher, WebhookSender
from pyrometer.collector.procs import python_env
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from support.telemetry_builder import S

pytestmark = pytest.mark.integration


class Receiver:
    """Webhook endpoints that record what they get; `fail` maps a path to the statuses
    to answer first (then 200)."""

    def __init__(self) -> None:
        self.got: dict[str, list[dict[str, Any]]] = {}
        self.fail: dict[str, list[int]] = {}
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        pending = self.fail.get(path, [])
        if pending:
            return web.Response(status=pending.pop(0))
        self.got.setdefault(path, []).append(await request.json())
        return web.Response(status=200)


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver()
    app = web.Application()
    app.router.add_post("/{name}", got.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    got.url = f"http://127.0.0.1:{port}"
    try:
        yield got
    finally:
        await runner.cleanup()


def config(url: str, **fields: Any) -> AlertConfig:
    hooks = tuple(Webhook(f"{url}/{fmt}", fmt) for fmt in ("json", "slack", "alertmanager"))
    return AlertConfig(hooks, lookback_ns=300 * S, baseline_ns=300 * S, step_ns=10 * S,
                       ui_url="https://pyrometer.example", **fields)


def test_one_notice_per_spike_in_every_format(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "pyrometer.duckdb")
    fill_spike(store)  # payload sizes triple at SPIKE_AT

    async def scenario() -> Receiver:
        async with receiver() as got:
            got.fail["/slack"] = [503]  # the first POST fails: retried
            watcher = AlertWatcher(store, config(got.url), "http://ignored")
            sender = WebhookSender(watcher_hooks(got.url), backoff_s=0.01)
            await sender.start()
            try:
                for at_s in (SPIKE_AT - 30, SPIKE_AT + 30, SPIKE_AT + 40, SPIKE_AT + 60,
                             SPIKE_AT + 70):
                    for notice in watcher.tick((T0 + at_s) * S):
                        sender.submit(notice)
                await sender.drain()
            finally:
                await sender.close()
            assert (sender.sent, sender.failed) == (3, 0)
            return got

    got = asyncio.run(scenario())
    store.close()
    (plain,) = got.got["/json"]
    assert plain["type"] == "spike" and plain["status"] == "firing"
    assert plain["causes"][0]["kind"] == "payload_size" and plain["labels"]["top_cause"] == "payload_size"
    assert plain["start_ns"] == (T0 + SPIKE_AT) * S
    assert plain["url"].startswith("https://pyrometer.example/?service=svc&from=")
    start_ms = (T0 + SPIKE_AT) * 1000  # the page opens with the spike's window selected
    assert f"&sel={start_ms}%2C" in plain["url"]
    (slack,) = got.got["/slack"]
    assert "top cause payload_size" in slack["text"] and "|open in Pyrometer>" in slack["text"]
    (am,) = got.got["/alertmanager"]
    assert am["version"] == "4" and am["status"] == "firing"
    (alert,) = am["alerts"]
    assert alert["labels"]["alertname"] == "PyrometerSpike"
    assert alert["labels"]["top_cause"] == "payload_size" and alert["generatorURL"] == plain["url"]


def watcher_hooks(url: str) -> tuple[Webhook, ...]:
    return config(url).webhooks


def test_an_slo_burn_fires_once_and_resolves_once(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "pyrometer.duckdb")
    fill_slo(store)  # 15 minutes of slow requests six hours in

    async def scenario() -> Receiver:
        async with receiver() as got:
            hooks = (Webhook(f"{got.url}/json", "json"),)
            watcher = AlertWatcher(store, AlertConfig(hooks, services=("nothing-here",)),
                                   "http://127.0.0.1:7071", SLO_OBJECTIVES[:1])
            sender = WebhookSender(hooks, backoff_s=0.01)
            await sender.start()
            try:
                for at_s in range(BURST[0] - 120, BURST[1] + 45 * 60, 60):  # minute by minute
                    for notice in watcher.tick((T0 + at_s) * S):
                        sender.submit(notice)
                await sender.drain()
            finally:
                await sender.close()
            return got

    got = asyncio.run(scenario())
    store.close()
    notices = got.got["/json"]
    assert [(n["status"], n["severity"]) for n in notices] == [("firing", "page"),
                                                               ("resolved", "page")], notices
    assert "SLO predict: page" in notices[0]["title"]
    assert notices[0]["url"].startswith("http://127.0.0.1:7071/?service=svc")


def test_a_refused_notice_is_not_sent_again_and_a_dead_receiver_costs_a_log_line() -> None:
    async def scenario() -> tuple[WebhookSender, Receiver]:
        async with receiver() as got:
            got.fail["/json"] = [400]
            hooks = (Webhook(f"{got.url}/json", "json"), Webhook("http://127.0.0.1:9/x", "json"))
            sender = WebhookSender(hooks, attempts=3, backoff_s=0.01, timeout_s=5)
            await sender.start()
            from pyrometer.collector.alerts.payloads import Notice

            sender.submit(Notice("spike", "firing", "k", "svc", "t", 0, 1, "info", "http://x/"))
            await sender.drain()
            await sender.close()
            return sender, got

    sender, got = asyncio.run(scenario())
    assert (sender.sent, sender.failed) == (0, 2) and got.got == {}
    assert got.fail["/json"] == []  # asked once: a 400 is not retried


@pytest.mark.parametrize(("doc", "message"), [
    ({}, '"webhooks" must list'),
    ({"webhooks": [{"url": "ftp://x"}]}, "webhook 1: url 'ftp://x' is not an http"),
    ({"webhooks": [{"url": "http://x", "format": "teams"}]}, "format 'teams'"),
    ({"webhooks": [{"url": "http://x"}], "interval": "500ms"}, "interval 500ms: at least 1s"),
    ({"webhooks": [{"url": "http://x"}], "percentile": "p50"}, "percentile 'p50'"),
    ({"webhooks": [{"url": "http://x"}], "step": "1m", "baseline": "2m"}, "three steps"),
    ({"webhooks": [{"url": "http://x"}], "hooks": []}, "unknown keys"),
])  # fmt: skip
def test_a_bad_alerts_file_is_refused_naming_what(tmp_path: Path, doc: dict[str, Any],
                                                 message: str) -> None:
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(AlertConfigError, match=message.replace("(", r"\(")):
        load_alerts(path)


def test_the_collector_starts_alerting_or_refuses_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps({"webhooks": [{"url": "http://x", "format": "nope"}]}))
    done = subprocess.run(
        [sys.executable, "-m", "pyrometer.agent.cli", "collector", "--db", str(tmp_path / "db"),
         "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--alerts", str(path)],
        capture_output=True, text=True, timeout=120, env=python_env())
    assert done.returncode == 2 and "webhook 1: format 'nope'" in done.stderr, done.stderr
    assert not (tmp_path / "db").exists()
