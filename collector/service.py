"""`pyrometer collector`: the one module that wires store, ingest and HTTP API together."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from pyrometer.collector import config as collector_config
from pyrometer.collector.api import create_app
from pyrometer.collector.config import CollectorConfig, check_listen
from pyrometer.collector.errors import CollectorError
from pyrometer.collector.ingest import IngestConfig, start_ingest_server
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage import DuckDBStore

log = logging.getLogger("pyrometer.collector")


def main(args: argparse.Namespace) -> int:
    return asyncio.run(run(collector_config.resolve(args)))


async def run(config: CollectorConfig, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or `stop` is set); print one ready line when up."""
    stop = stop or _stop_on_signals()
    store = DuckDBStore(config.db_path)
    metrics = CollectorMetrics()
    try:
        ingest = await start_ingest_server(store, IngestConfig(
            listen=config.grpc_listen, commit_delay_s=config.commit_delay_ms / 1000), metrics)
        try:
            runner, http_url = await _start_http(config, store, metrics)
            try:
                host = config.grpc_listen.rsplit(":", 1)[0]
                print(f"pyrometer collector: ingest on {host}:{ingest.port} (gRPC), "
                      f"API on {http_url} (HTTP), db {config.db_path}", flush=True)
                await stop.wait()
                log.info("shutting down")
            finally:
                await runner.cleanup()
        finally:
            await ingest.stop()
    finally:
        store.close()
    return 0


async def _start_http(config: CollectorConfig, store: DuckDBStore, metrics: CollectorMetrics
                      ) -> tuple[web.AppRunner, str]:
    host, port = check_listen("--http-listen", config.http_listen)
    runner = web.AppRunner(create_app(store, metrics), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise CollectorError(f"cannot listen on {config.http_listen} (HTTP API): {err}") from None
    bound = runner.addresses[0][1]
    return runner, f"http://{host}:{bound}"


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
