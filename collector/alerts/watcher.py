"""The loop that finds spikes and SLO changes as data arrives, and the webhook senders.

Every `interval` the watcher analyses the last `lookback` of each service (the spike
analysis of GET /api/v1/spikes, on a grid aligned to the step so that a spike keeps its
start from one look to the next) and evaluates each SLO. A spike is notified once: the
watcher remembers, per service, route and instance, the window of the last spike it
notified and how far it has grown; a spike that begins before that window ends is the
same one. An SLO is notified when its state changes (ok -> ticket -> page, or back to
ok: "resolved"). The memory is the process's: a restarted collector notifies again the
spikes still inside its first lookback, and SLOs already burning.

Delivery never holds up ingest or the API: the analysis runs in a worker thread, and
each webhook has its own bounded queue and sender task, which retries a failed POST
(connection error, timeout, 429 or 5xx) with exponential backoff and gives up on other
4xx answers, with a log line either way. A queue that overflows drops its oldest notice
and says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.alerts.config import AlertConfig, Webhook
from pyrometer.collector.alerts.payloads import Notice, body, slo_notice, spike_notice
from pyrometer.collector.analysis.detect import DetectConfig
from pyrometer.collector.analysis.gather import SpikeQuery, analyze
from pyrometer.collector.analysis.report import to_json
from pyrometer.collector.analysis.slo import Objective, status_at
from pyrometer.collector.analysis.stages import DEFAULT_RULES, StageRule
from pyrometer.collector.api.slos import status_json
from pyrometer.collector.storage.store import Store

log = logging.getLogger("pyrometer.collector.alerts")
QUEUE_MAX = 1000


class AlertWatcher:
    """What to notify, decided from the store at a given moment (`tick`)."""

    def __init__(self, store: Store, config: AlertConfig, ui_url: str,
                 objectives: Sequence[Objective] = (),
                 stage_rules: tuple[StageRule, ...] = DEFAULT_RULES,
                 on_spike: Callable[[str, str], None] | None = None,
                 trace_url: str = "") -> None:
        self._store = store
        self._config = config
        self._ui_url = config.ui_url or ui_url.rstrip("/")
        self._objectives = tuple(objectives)
        self._rules = stage_rules
        self._on_spike = on_spike  # (service, top cause) of each new spike: /metrics counts
        self._trace_url = trace_url
        self._notified: dict[tuple[str, str, str], tuple[Nanos, Nanos]] = {}
        self._slo_states: dict[tuple[str, str], str] = {}

    def tick(self, now_ns: Nanos) -> list[Notice]:
        """The notices due at `now_ns`, each once (this object remembers what it sent)."""
        cfg = self._config
        now = now_ns - now_ns % cfg.step_ns  # the bucket grid stays put between looks
        notices: list[Notice] = []
        services = cfg.services or tuple(s.name for s in self._store.services())
        detect = DetectConfig(step_ns=cfg.step_ns, baseline_ns=cfg.baseline_ns,
                              percentile=cfg.percentile)
        for service in services:
            report = analyze(self._store, SpikeQuery(service, now - cfg.lookback_ns, now, detect,
                                                     self._rules))
            for spike in to_json(report, self._trace_url)["spikes"]:
                if self._new_spike(service, spike):
                    notice = spike_notice(service, spike, cfg.percentile, self._ui_url)
                    notices.append(notice)
                    if self._on_spike is not None:
                        self._on_spike(service, notice.labels["top_cause"])
        for objective in self._objectives:  # every SLO: each names its own service
            status = status_json(status_at(self._store, objective, now_ns))
            key = (objective.service, objective.name)
            previous = self._slo_states.get(key, "ok")
            if status["state"] != previous:
                notices.append(slo_notice(status, previous, self._ui_url, cfg.lookback_ns))
            self._slo_states[key] = status["state"]
        return notices

    def _new_spike(self, service: str, spike: dict[str, Any]) -> bool:
        key = (service, spike.get("route") or "", spike.get("instance") or "")
        start, end = spike["start_ns"], spike["end_ns"]
        last = self._notified.get(key)
        if last is not None and start < last[1]:  # the one notified, grown (or older)
            self._notified[key] = (last[0], max(last[1], end))
            return False
        self._notified[key] = (start, end)
        return True

    async def run(self, sender: WebhookSender, stop: asyncio.Event,
                  clock: Callable[[], Nanos] = time.time_ns) -> None:
        """Look every interval until `stop`; a failed look is logged and the next one runs."""
        interval_s = self._config.interval_ns / 1e9
        while not stop.is_set():
            try:
                for notice in await asyncio.to_thread(self.tick, clock()):
                    sender.submit(notice)
            except Exception:  # a bad look must not end alerting for good
                log.exception("alerts: looking for spikes and SLO changes failed")
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass


class WebhookSender:
    """One bounded queue and one sender task per webhook."""

    def __init__(self, webhooks: Sequence[Webhook], *, attempts: int = 5, backoff_s: float = 1.0,
                 timeout_s: float = 10.0, queue_max: int = QUEUE_MAX) -> None:
        self._hooks = tuple(webhooks)
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._queues = [asyncio.Queue[Notice](queue_max) for _ in self._hooks]
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        self._tasks = [asyncio.get_running_loop().create_task(self._send_all(hook, queue),
                                                              name=f"webhook {hook.url}")
                       for hook, queue in zip(self._hooks, self._queues, strict=True)]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def submit(self, notice: Notice) -> None:
        for hook, queue in zip(self._hooks, self._queues, strict=True):
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
                log.warning("alerts: %s is behind; dropped its oldest notice", hook.url)
            queue.put_nowait(notice)

    async def drain(self) -> None:
        """Wait until every queued notice was sent or given up (for tests and shutdown)."""
        await asyncio.gather(*(queue.join() for queue in self._queues))

    async def _send_all(self, hook: Webhook, queue: asyncio.Queue[Notice]) -> None:
        while True:
            notice = await queue.get()
            try:
                await self._send(hook, notice)
            finally:
                queue.task_done()

    async def _send(self, hook: Webhook, notice: Notice) -> None:
        assert self._session is not None, "start() first"
        payload = body(notice, hook.format)
        why = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
            try:
                async with self._session.post(hook.url, json=payload) as response:
                    if response.status < 300:
                        self.sent += 1
                        return
                    why = f"HTTP {response.status}"
                    if response.status < 500 and response.status != 429:
                        break  # the receiver refuses it: sending it again changes nothing
            except (aiohttp.ClientError, TimeoutError) as err:
                why = f"{type(err).__name__}: {err}"
        self.failed += 1
        log.warning("alerts: could not deliver %s to %s: %s", notice.key, hook.url, why)
