"""`pyrometer collector`: the one module that wires store, ingest and HTTP API together."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from pyrometer.collector import config as collector_config
from pyrometer.collector import gcpause
from pyrometer.collector.alerts.watcher import AlertWatcher, WebhookSender
from pyrometer.collector.analysis.stages import DEFAULT_RULES
from pyrometer.collector.api import tls
from pyrometer.collector.api.app import RUNNER_OPTIONS, create_app
from pyrometer.collector.api.auth import TokenInterceptor, http_middleware
from pyrometer.collector.config import CollectorConfig, check_listen
from pyrometer.collector.errors import ListenError
from pyrometer.collector.ingest.server import IngestConfig, start_ingest_server
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.compaction import CompactionPolicy, run_compaction
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.lake.backend import LakeStore, redacted
from pyrometer.collector.storage.lake.maintenance import MaintenancePolicy, run_maintenance
from pyrometer.collector.storage.retention import RetentionPolicy, run_retention

log = logging.getLogger("pyrometer.collector")


def main(args: argparse.Namespace) -> int:
    gcpause.tune_for_ingest()  # the process's own, so not in run(), which tests share
    return asyncio.run(run(collector_config.resolve(args)))


async def run(config: CollectorConfig, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or `stop` is set); print one ready line when up."""
    stop = stop or _stop_on_signals()
    _log_security(config)
    store = _open_store(config)
    metrics = CollectorMetrics()
    try:
        ingest = await start_ingest_server(
            store, IngestConfig(
                listen=config.grpc_listen, commit_delay_s=config.commit_delay_ms / 1000,
                decode_workers=config.decode_workers),
            metrics, interceptors=[TokenInterceptor(config.tokens)] if config.tokens.enabled else [],
            credentials=tls.grpc_credentials(config.tls) if config.tls else None)
        try:
            runner, http_url = await _start_http(config, store, metrics)
            retention = (_start_retention(config, store, metrics) if config.lake is None
                         else _start_maintenance(config, store, metrics))
            alerts = await _start_alerts(config, store, http_url, metrics)
            # its own stop event: the task is cancelled at shutdown, mid-pass if need be
            compaction = asyncio.get_running_loop().create_task(
                run_compaction(store, CompactionPolicy(), asyncio.Event()), name="rollups")
            try:
                print(_ready_line(config, ingest.port, http_url), flush=True)
                await stop.wait()
                log.info("shutting down")
            finally:
                if alerts is not None:
                    await _stop_task(alerts[0])
                    await alerts[1].close()
                await _stop_task(compaction)
                if retention is not None:
                    await _stop_task(retention)
                await runner.cleanup()
        finally:
            await ingest.stop()
    finally:
        store.close()
    return 0


def _open_store(config: CollectorConfig) -> DuckDBStore:
    if config.lake is not None:
        return LakeStore(config.lake.catalog, config.lake.data_path)
    assert config.db_path is not None  # resolve() gives one or the other
    return DuckDBStore(config.db_path)


async def _start_http(config: CollectorConfig, store: DuckDBStore, metrics: CollectorMetrics
                      ) -> tuple[web.AppRunner, str]:
    host, port = check_listen("--http-listen", config.http_listen)
    middlewares = [http_middleware(config.tokens)] if config.tokens.enabled else []
    app = create_app(store, metrics, middlewares, stage_rules=config.stage_rules,
                     objectives=config.objectives, trace_url=config.trace_url)
    runner = web.AppRunner(app, access_log=None, **RUNNER_OPTIONS)
    await runner.setup()
    context = tls.https_context(config.tls) if config.tls else None
    site = web.TCPSite(runner, host, port, ssl_context=context)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise ListenError(f"cannot listen on {config.http_listen} (HTTP API): {err}") from None
    bound = runner.addresses[0][1]
    return runner, f"{'https' if context else 'http'}://{host}:{bound}"


def _start_retention(config: CollectorConfig, store: DuckDBStore, metrics: CollectorMetrics
                     ) -> asyncio.Task[None] | None:
    if config.retention_ns is None:
        log.info("--retention off: data is kept until deleted by hand")
        return None
    policy = RetentionPolicy(config.retention_ns, interval_s=config.retention_interval_s,
                             first_delay_s=min(60.0, config.retention_interval_s),
                             rollup_retention_ns=config.rollup_retention_ns)
    # its own stop event: the task is cancelled at shutdown, mid-pass if need be
    return asyncio.get_running_loop().create_task(
        run_retention(store, policy, metrics, asyncio.Event()), name="retention")


def _start_maintenance(config: CollectorConfig, store: DuckDBStore, metrics: CollectorMetrics
                       ) -> asyncio.Task[None] | None:
    """The lake's maintenance loop, which does its retention too (lake/maintenance.py)."""
    assert config.lake is not None and isinstance(store, LakeStore)
    every = config.lake.maintenance_interval_s
    kept = config.retention_ns
    if every is None:
        log.warning("--maintenance-interval off: this collector neither maintains the lake nor "
                    "applies --retention; another collector of the lake must, or small files, "
                    "inlined rows and old data accumulate")
        return None
    retention = None if kept is None else RetentionPolicy(
        kept, rollup_retention_ns=config.rollup_retention_ns)
    policy = MaintenancePolicy(interval_s=every, first_delay_s=min(60.0, every),
                               retention=retention)
    holder = store.writer_id
    log.info("lake maintenance every %.0f s (as %s), retention %s", every, holder,
             "off" if kept is None else f"{kept / 86_400e9:g} days")
    # its own stop event: the task is cancelled at shutdown, mid-pass if need be
    return asyncio.get_running_loop().create_task(
        run_maintenance(store, policy, metrics, asyncio.Event(), holder), name="maintenance")


async def _start_alerts(config: CollectorConfig, store: DuckDBStore, http_url: str,
                        metrics: CollectorMetrics
                        ) -> tuple[asyncio.Task[None], WebhookSender] | None:
    if config.alerts is None:
        return None
    sender = WebhookSender(config.alerts.webhooks)
    await sender.start()
    watcher = AlertWatcher(store, config.alerts, http_url, config.objectives,
                           config.stage_rules or DEFAULT_RULES, on_spike=metrics.services.spike,
                           trace_url=config.trace_url)
    task = asyncio.get_running_loop().create_task(watcher.run(sender, asyncio.Event()),
                                                  name="alerts")
    log.info("alerts: %d webhook(s), looking every %.0f s", len(config.alerts.webhooks),
             config.alerts.interval_ns / 1e9)
    return task, sender


async def _stop_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def _ready_line(config: CollectorConfig, grpc_port: int, http_url: str) -> str:
    """The one line tests and the demo wait for; it names the transport security too."""
    host = config.grpc_listen.rsplit(":", 1)[0]
    ingest, api = "gRPC", "HTTP"
    if config.tls is not None:
        ingest, api = ("gRPC+mTLS" if config.tls.client_ca_path else "gRPC+TLS"), "HTTPS"
    where = (f"lake {redacted(config.lake.catalog)} data {config.lake.data_path}"
             if config.lake is not None else f"db {config.db_path}")
    return (f"pyrometer collector: ingest on {host}:{grpc_port} ({ingest}), "
            f"API on {http_url} ({api}), {where}")


def _log_security(config: CollectorConfig) -> None:
    """Say once how the collector is protected (never with the tokens themselves)."""
    if not config.tokens.enabled:
        log.warning("no --token set: ingest and API are open to anyone who can reach them")
    else:
        reads = "a separate read token" if config.tokens.read else "the same token"
        log.info("tokens required: ingest and writes need --token, reads %s", reads)
        if config.tls is None:
            log.warning("tokens travel in clear text: serve with --tls-cert/--tls-key unless "
                        "the network already encrypts")


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
