"""TLS and mutual TLS on gRPC ingest, HTTPS on the API, with certificates made here."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey
from pyrometer.agent.ship import channel as security
from pyrometer.collector import config as collector_config
from pyrometer.collector.api import tls
from pyrometer.collector.config import ServerTls
from pyrometer.collector.ingest.server import IngestConfig, start_ingest_server
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.procs import Child, python_env, start
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.proto import ingest_pb2_grpc
from support.certs import Pki, make_pki
from support.ingest_builder import BASE_NS, StreamEncoder, stack

MAIN = stack("main", "serve", "forward")
WINDOW = (BASE_NS - 3600 * NANOS_PER_SECOND, BASE_NS + 3600 * NANOS_PER_SECOND)
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
READY = r"ingest on (?P<grpc>\S+) \((?P<kind>gRPC\S*)\), API on (?P<http>https?://\S+)"
TOKEN = "tls-test-token-0123456789"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "good")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki-other"), "other")


def agent_security(*argv: str) -> security.Security:
    parser = argparse.ArgumentParser()
    security.add_arguments(parser)
    return security.resolve(parser.parse_args(list(argv)), {})


@asynccontextmanager
async def tls_ingest(tmp_path: Path, server_tls: ServerTls) -> AsyncIterator[tuple[DuckDBStore, str]]:
    store = DuckDBStore(tmp_path / "tls.duckdb")
    server = await start_ingest_server(store, IngestConfig(listen="127.0.0.1:0"), CollectorMetrics(),
                                       credentials=tls.grpc_credentials(server_tls))
    try:
        yield store, f"127.0.0.1:{server.port}"
    finally:
        await server.stop(1.0)
        store.close()


async def ship(target: str, creds: security.Security) -> grpc.StatusCode:
    """Stream one batch through the agent's channel factory; the call's final status."""
    async with security.channel(target, creds, compression=grpc.Compression.Gzip) as channel:
        call = ingest_pb2_grpc.IngestStub(channel).Stream(
            metadata=security.call_metadata(creds), timeout=20)
        try:
            await call.write(StreamEncoder().batch(1, {SampleKey(MAIN): 4}))
            assert (await call.read()).seq == 1
            await call.done_writing()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the handshake failed: the status says why
        return await call.code()  # type: ignore[no-any-return]


def test_tls_ingest(tmp_path: Path, pki: Pki, other_pki: Pki) -> None:
    async def main() -> None:
        async with tls_ingest(tmp_path, ServerTls(str(pki.server_cert), str(pki.server_key))) as (
                store, target):
            assert await ship(target, agent_security("--tls-ca", str(other_pki.ca))) == (
                grpc.StatusCode.UNAVAILABLE)
            assert await ship(target, security.Security()) == grpc.StatusCode.UNAVAILABLE  # plain
            assert await ship(target, agent_security(
                "--tls-ca", str(pki.ca), "--tls-server-name", "wrong.example")) == (
                grpc.StatusCode.UNAVAILABLE)
            assert store.profile("svc", *WINDOW).total == 0
            assert await ship(target, agent_security("--tls-ca", str(pki.ca))) == grpc.StatusCode.OK
            assert await ship(target.replace("127.0.0.1", "localhost"), agent_security(
                "--tls-ca", str(pki.ca), "--tls-server-name", "localhost")) == grpc.StatusCode.OK
            assert store.profile("svc", *WINDOW).total == 4  # the second was a duplicate

    asyncio.run(main())


def test_mutual_tls_ingest(tmp_path: Path, pki: Pki, other_pki: Pki) -> None:
    server_tls = ServerTls(str(pki.server_cert), str(pki.server_key), str(pki.ca))

    async def main() -> None:
        async with tls_ingest(tmp_path, server_tls) as (store, target):
            ca = ("--tls-ca", str(pki.ca))
            # the handshake fails, which agents see (and retry) as UNAVAILABLE
            assert await ship(target, agent_security(*ca)) == grpc.StatusCode.UNAVAILABLE
            assert await ship(target, agent_security(
                *ca, "--tls-cert", str(other_pki.client_cert),
                "--tls-key", str(other_pki.client_key))) == grpc.StatusCode.UNAVAILABLE
            assert store.profile("svc", *WINDOW).total == 0
            assert await ship(target, agent_security(
                *ca, "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key))) == (
                grpc.StatusCode.OK)
            assert store.profile("svc", *WINDOW).total == 4

    asyncio.run(main())


def test_bad_tls_files_are_config_errors(tmp_path: Path, pki: Pki, other_pki: Pki) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="go together"):
        agent_security("--tls-cert", str(pki.client_cert))
    with pytest.raises(ConfigError, match="not a PEM certificate and its matching"):
        agent_security("--tls-cert", str(pki.client_cert), "--tls-key", str(other_pki.client_key))
    with pytest.raises(ConfigError, match="--tls-ca .*not a PEM certificate"):
        agent_security("--tls-ca", str(junk))
    assert agent_security("--tls").tls and not agent_security().tls
    parser = argparse.ArgumentParser()
    collector_config.add_arguments(parser)
    with pytest.raises(ConfigError, match="--tls-client-ca needs --tls-cert"):
        collector_config.resolve(parser.parse_args(["--db", "x", "--tls-client-ca", str(pki.ca)]), {})
    with pytest.raises(ConfigError, match="cannot read it"):
        collector_config.resolve(parser.parse_args(["--db", "x"]), {
            "PYROMETER_TLS_CERT": str(tmp_path / "missing.pem"), "PYROMETER_TLS_KEY": str(junk)})


# --- a real collector process serving TLS gRPC and HTTPS ---------------------------

@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Child]:
    tmp = tmp_path_factory.mktemp("tls-collector")
    child = start("collector", CLI + [
        "collector", "--db", str(tmp / "c.duckdb"), "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0", "--tls-cert", str(pki.server_cert),
        "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca)],
        READY, tmp, env=python_env(PYROMETER_TOKEN=TOKEN))
    try:
        yield child
    finally:
        assert child.stop(signal.SIGTERM, timeout=30) == 0, child.output()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=60,
                          env=python_env(**env))


@pytest.mark.integration
def test_https_api_and_mtls_ingest_in_one_collector(collector: Child, pki: Pki) -> None:
    assert collector.ready.group("kind") == "gRPC+mTLS"
    url = collector.ready.group("http")
    assert url.startswith("https://")
    creds = agent_security("--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert),
                           "--tls-key", str(pki.client_key), "--token", TOKEN)
    assert asyncio.run(ship(collector.ready.group("grpc"), creds)) == grpc.StatusCode.OK
    t0 = BASE_NS // NANOS_PER_SECOND
    query = ["flamegraph", "--url", url, "--service", "svc", "--from", str(t0 - 60),
             "--to", str(t0 + 60), "--format", "json"]
    untrusted = cli(*query, "--token", TOKEN)
    assert untrusted.returncode == 2 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    done = cli(*query, "--ca", str(pki.ca), PYROMETER_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == 4
    posted = cli("event", "--url", url, "--service", "svc", "--version", "9", "--token", TOKEN,
                 PYROMETER_CA=str(pki.ca))
    assert posted.returncode == 0, posted.stderr
