"""Bearer tokens: how they are resolved, and how the collector enforces them for real on
gRPC ingest (an interceptor) and the HTTP API (a middleware), and from the CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey
from pyrometer.agent.ship import channel as security
from pyrometer.collector import config as collector_config
from pyrometer.collector.api.app import create_app
from pyrometer.collector.api.auth import Access, TokenInterceptor, Verdict, authorize, http_middleware
from pyrometer.collector.config import Tokens
from pyrometer.collector.ingest.server import IngestConfig, start_ingest_server
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.procs import Child, python_env, start
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.proto import ingest_pb2_grpc
from support.ingest_builder import BASE_NS, StreamEncoder, stack

WRITE, READ = "w-" + "0123456789abcdef" * 2, "r-" + "fedcba9876543210" * 2
TOKENS = Tokens(write=WRITE, read=READ)
MAIN = stack("main", "serve", "forward")
WINDOW = (BASE_NS - 3600 * NANOS_PER_SECOND, BASE_NS + 3600 * NANOS_PER_SECOND)
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
READY = r"ingest on (?P<grpc>\S+) \(gRPC\S*\), API on (?P<http>https?://\S+)"


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --- the rule, as a pure function -------------------------------------------------

@pytest.mark.parametrize(("header", "need", "verdict"), [
    (bearer(WRITE), Access.WRITE, Verdict.ALLOWED),
    (bearer(WRITE), Access.READ, Verdict.ALLOWED),
    (f"bearer  {READ} ", Access.READ, Verdict.ALLOWED),
    (bearer(READ), Access.WRITE, Verdict.FORBIDDEN),
    (bearer(WRITE + "x"), Access.READ, Verdict.UNKNOWN),
    (bearer("é"), Access.READ, Verdict.UNKNOWN),
    (None, Access.READ, Verdict.MISSING),
    ("Basic dXNlcjpwYXNz", Access.READ, Verdict.MISSING),
    ("Bearer ", Access.READ, Verdict.MISSING),
])
def test_authorize(header: str | None, need: Access, verdict: Verdict) -> None:
    assert authorize(TOKENS, header, need) is verdict


def test_without_a_read_token_the_write_token_gates_reads_and_no_tokens_opens_all() -> None:
    only_write = Tokens(write=WRITE)
    assert authorize(only_write, bearer(WRITE), Access.READ) is Verdict.ALLOWED
    assert authorize(only_write, bearer(READ), Access.READ) is Verdict.UNKNOWN
    assert authorize(Tokens(), None, Access.WRITE) is Verdict.ALLOWED


# --- resolution: flag > variable, files stripped, nothing secret in messages -------

def agent_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    security.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_token_sources_and_precedence(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"\n  {WRITE}\n\n")
    assert security.resolve(agent_args("--token-file", str(token_file)), {}).token == WRITE
    assert security.resolve(agent_args(), {"PYROMETER_TOKEN": READ}).token == READ
    assert security.resolve(agent_args(), {"PYROMETER_TOKEN_FILE": str(token_file)}).token == WRITE
    # a flag, either form, wins over both variables
    assert security.resolve(agent_args("--token", READ), {"PYROMETER_TOKEN_FILE": "/nope"}).token == READ
    assert security.resolve(agent_args(), {}) == security.Security()
    assert WRITE not in repr(security.resolve(agent_args("--token", WRITE), {}))


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--token", "abc", "--token-file", "f"], {}, "both given"),
    ([], {"PYROMETER_TOKEN": "a", "PYROMETER_TOKEN_FILE": "f"}, "both given"),
    (["--token-file", "{empty}"], {}, "the token is empty"),
    (["--token-file", "{missing}"], {}, "cannot read it"),
    (["--token", "secret with-space"], {}, "visible ASCII"),
    (["--token", "sécret"], {}, "visible ASCII"),
])
def test_bad_tokens_are_config_errors_that_do_not_show_them(
        tmp_path: Path, argv: list[str], env: dict[str, str], message: str) -> None:
    (tmp_path / "empty").write_text(" \n")
    argv = [a.format(empty=tmp_path / "empty", missing=tmp_path / "missing") for a in argv]
    with pytest.raises(ConfigError, match=message) as raised:
        security.resolve(agent_args(*argv), env)
    assert "secret" not in str(raised.value)


def collector_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    collector_config.add_arguments(parser)
    return parser.parse_args(["--db", "x.duckdb", *argv])


def test_collector_tokens_resolve(tmp_path: Path) -> None:
    read_file = tmp_path / "read"
    read_file.write_text(READ + "\n")
    config = collector_config.resolve(collector_args("--read-token-file", str(read_file)),
                                      {"PYROMETER_TOKEN": WRITE})
    assert config.tokens == TOKENS and WRITE not in repr(config) and READ not in repr(config)
    assert collector_config.resolve(collector_args(), {}).tokens == Tokens()
    with pytest.raises(ConfigError, match="--read-token needs --token"):
        collector_config.resolve(collector_args(), {"PYROMETER_READ_TOKEN": READ})


def test_call_metadata() -> None:
    assert security.call_metadata(security.Security()) == ()
    assert security.call_metadata(security.Security(token=WRITE)) == (
        ("authorization", bearer(WRITE)),)


# --- gRPC: the interceptor on a real ingest server ---------------------------------

@asynccontextmanager
async def ingest(tmp_path: Path) -> AsyncIterator[tuple[DuckDBStore, grpc.aio.Channel]]:
    store = DuckDBStore(tmp_path / "auth.duckdb")
    server = await start_ingest_server(store, IngestConfig(listen="127.0.0.1:0"), CollectorMetrics(),
                                       interceptors=[TokenInterceptor(TOKENS)])
    try:
        async with security.channel(f"127.0.0.1:{server.port}", security.Security()) as channel:
            yield store, channel
    finally:
        await server.stop(1.0)
        store.close()


async def stream_one(channel: grpc.aio.Channel, token: str | None) -> int:
    """Send one batch with `token`; the acked seq."""
    call = ingest_pb2_grpc.IngestStub(channel).Stream(
        metadata=security.call_metadata(security.Security(token=token)), timeout=20)
    await call.write(StreamEncoder().batch(1, {SampleKey(MAIN): 3}))
    ack = await call.read()
    await call.done_writing()
    return int(ack.seq)


def test_grpc_ingest_needs_the_write_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with ingest(tmp_path) as (store, channel):
            for token, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                                (WRITE[:-1] + "X", grpc.StatusCode.UNAUTHENTICATED),
                                (READ, grpc.StatusCode.PERMISSION_DENIED)):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stream_one(channel, token)
                assert raised.value.code() == code
                assert WRITE[:-1] not in (raised.value.details() or "")
                assert store.profile("svc", *WINDOW).total == 0  # nothing stored
            assert await stream_one(channel, WRITE) == 1
            assert store.profile("svc", *WINDOW).total == 3
            # probes send no token: the health service stays open
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=20)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert "refused /pyrometer.v1.Ingest/Stream call" in caplog.text
    assert WRITE[:-1] not in caplog.text and READ not in caplog.text


# --- HTTP: the middleware on a real API server -------------------------------------

@asynccontextmanager
async def api(tmp_path: Path, tokens: Tokens) -> AsyncIterator[str]:
    store = DuckDBStore(tmp_path / "api.duckdb")
    runner = web.AppRunner(create_app(store, CollectorMetrics(), [http_middleware(tokens)]))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        store.close()


async def status(session: aiohttp.ClientSession, method: str, url: str, token: str | None) -> int:
    headers = {"Authorization": bearer(token)} if token else {}
    body = {"service": "svc", "kind": "deploy", "version": "1"} if method == "POST" else None
    async with session.request(method, url, headers=headers, json=body) as response:
        if response.status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "missing or wrong token" in (await response.json())["error"]
        return response.status


def test_http_tokens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with api(tmp_path, TOKENS) as base, aiohttp.ClientSession() as session:
            services, events = f"{base}/api/v1/services", f"{base}/api/v1/events"
            assert await status(session, "GET", f"{base}/healthz", None) == 200
            for url in (services, f"{base}/metrics", f"{events}?service=svc"):
                assert await status(session, "GET", url, None) == 401
                assert await status(session, "GET", url, "nope") == 401
                assert await status(session, "GET", url, READ) == 200
                assert await status(session, "GET", url, WRITE) == 200
            assert await status(session, "POST", events, None) == 401
            assert await status(session, "POST", events, READ) == 403
            assert await status(session, "POST", events, WRITE) == 201
            # auth runs before parameter checks: no 400 that would reveal the API's shape
            assert await status(session, "GET", f"{base}/api/v1/flamegraph", None) == 401

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert READ not in caplog.text and WRITE not in caplog.text


def test_the_page_and_its_files_are_open_but_no_path_through_them_reaches_data(tmp_path: Path) -> None:
    async def main() -> None:
        async with api(tmp_path, TOKENS) as base, aiohttp.ClientSession() as session:
            for path in ("/", "/ui/app.js", "/ui/vendor/uplot/uPlot.iife.min.js"):
                assert await status(session, "GET", f"{base}{path}", None) == 200, path
            assert await status(session, "GET", f"{base}/ui/no-such-file.js", None) == 404
            # whatever a client makes of dots in the path, it never gets data without a token
            for path in ("/ui/../api/v1/services", "/ui/%2e%2e/api/v1/services",
                         "/ui/..%2fapi/v1/services", "/ui/vendor/../../metrics"):
                async with session.get(f"{base}{path}", headers={}) as response:
                    body = await response.read()
                    assert response.status in (401, 404), (path, response.status)
                    assert b'"services"' not in body, path

    asyncio.run(main())


# --- the CLI against a real collector process --------------------------------------

@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    tmp = tmp_path_factory.mktemp("auth-cli")
    (tmp / "token").write_text(WRITE + "\n")
    child = start("collector", CLI + ["collector", "--db", str(tmp / "c.duckdb"), "--grpc-listen",
                                      "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                                      "--token-file", str(tmp / "token")],
                  READY, tmp, env=python_env(PYROMETER_READ_TOKEN=READ))
    try:
        yield child
    finally:
        assert child.stop(signal.SIGTERM, timeout=30) == 0, child.output()
        assert WRITE not in child.output() and READ not in child.output()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=60,
                          env=python_env(**env))


@pytest.mark.integration
def test_cli_sends_the_token(collector: Child, tmp_path: Path) -> None:
    async def ship() -> None:
        async with security.channel(collector.ready.group("grpc"), security.Security()) as channel:
            assert await stream_one(channel, WRITE) == 1

    asyncio.run(ship())
    url = collector.ready.group("http")
    query = ["--url", url, "--service", "svc", "--from", str(BASE_NS // NANOS_PER_SECOND - 60),
             "--to", str(BASE_NS // NANOS_PER_SECOND + 60), "--format", "json"]
    denied = cli("flamegraph", *query)
    assert denied.returncode == 2 and "401 from" in denied.stderr and "--token" in denied.stderr
    done = cli("flamegraph", *query, "--token", READ)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == 3
    (tmp_path / "t").write_text(f"  {READ}  ")
    assert cli("flamegraph", *query, "--token-file", str(tmp_path / "t")).returncode == 0
    assert cli("flamegraph", *query, PYROMETER_TOKEN=READ).returncode == 0
    event = ["event", "--url", url, "--service", "svc", "--version", "2"]
    read_only = cli(*event, "--token", READ)
    assert read_only.returncode == 2 and "403 from" in read_only.stderr
    assert READ not in read_only.stderr
    assert cli(*event, PYROMETER_TOKEN=WRITE).returncode == 0
    assert "no --token set" not in collector.output()
