"""LakeStore with its Parquet files on S3: a PostgreSQL catalog and an S3-compatible server
(moto, support/s3.py), both started here on 127.0.0.1, once for the module.

DuckLake writes a commit of at most 10 rows into the catalog rather than a Parquet file
(data inlining), and the test batches are that small: so the tests flush the lake to
Parquet before they read, and every answer then comes through DuckDB's httpfs from the
bucket. Runs in .venv-lake (`make test-lake`, which installs moto); elsewhere it skips
and says why. Each test gets a catalog database and a key prefix of its own.
"""

from __future__ import annotations

import socket
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from pyrometer.collector.errors import StorageError
from pyrometer.collector.procs import python_env, start
from pyrometer.collector.render.folded import render_folded
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.lake import extensions, s3
from pyrometer.collector.storage.lake.backend import LakeStore
from support.lake import WINDOW, answers, fill, missing_extensions
from support.postgres import Postgres
from support.request_servers import free_port
from support.s3 import S3Server, start_s3

pytestmark = [pytest.mark.lake, pytest.mark.integration]

if (why := missing_extensions("ducklake", "postgres_scanner", "httpfs")) is not None:
    pytest.skip(why, allow_module_level=True)

BUCKET = "pyrometer-lake"


@pytest.fixture(scope="module")
def bucket() -> Iterator[S3Server]:
    """moto with one bucket, for the module."""
    try:
        server = start_s3()
    except RuntimeError as err:  # no moto in this virtualenv: say what to do
        pytest.skip(str(err))
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@dataclass
class S3Lake:
    catalog: str
    prefix: str  # the key prefix of its files in BUCKET, with a trailing slash
    env: dict[str, str]

    @property
    def data_path(self) -> str:
        return f"s3://{BUCKET}/{self.prefix}"

    def open(self) -> LakeStore:
        return LakeStore(self.catalog, self.data_path, env=self.env)

    def flush(self) -> None:
        """Move what DuckLake inlined into the catalog to Parquet files in the bucket, from
        a connection of its own, as a maintenance job would."""
        con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False})
        try:
            extensions.load(con, extensions.CATALOG + extensions.S3)
            con.execute(s3.secret_sql(self.env))
            con.execute(f"ATTACH {extensions.literal('ducklake:postgres:' + self.catalog)} AS lake "
                        f"(DATA_PATH {extensions.literal(self.data_path)})")
            con.execute("CALL ducklake_flush_inlined_data('lake')")
        finally:
            con.close()


@pytest.fixture
def lake(postgres: Postgres, bucket: S3Server) -> S3Lake:
    name = uuid.uuid4().hex[:12]
    return S3Lake(postgres.create_database(f"lake_{name}"), f"lake-{name}/", bucket.env())


def test_an_s3_lake_answers_as_the_embedded_store_from_parquet_in_the_bucket(
        lake: S3Lake, bucket: S3Server, tmp_path: Path) -> None:
    local = DuckDBStore(tmp_path / "local.duckdb")
    for group in fill():
        local.commit(group)
    writers = lake.open(), lake.open()
    try:
        for n, group in enumerate(fill()):
            writers[n % 2].commit(group)
        lake.flush()
        keys = bucket.keys(BUCKET, lake.prefix)
        # DuckLake's layout: PREFIX/SCHEMA/TABLE/ducklake-UUID.parquet
        assert keys and all(k.startswith(lake.prefix) and k.endswith(".parquet") for k in keys), keys
        tables = {k[len(lake.prefix):].split("/")[1] for k in keys}
        assert {"samples", "stacks", "frames", "events", "agent_hwm"} <= tables, tables
        expected = answers(local)
        assert expected["profile"].samples  # type: ignore[attr-defined]
        for store in writers:
            assert answers(store) == expected
    finally:
        for store in writers:
            store.close()
        local.close()
    # a collector started afterwards reads the same from the bucket
    reader = lake.open()
    try:
        assert answers(reader) == expected
    finally:
        reader.close()


def test_a_collector_on_an_s3_lake_serves_its_flame_graph(lake: S3Lake, tmp_path: Path) -> None:
    writer = lake.open()
    try:
        for group in fill():
            writer.commit(group)
        profile = writer.profile("svc", *WINDOW)
    finally:
        writer.close()
    lake.flush()
    cli = [sys.executable, "-m", "pyrometer.agent.cli", "collector", "--lake", lake.catalog,
           "--data-path", lake.data_path, "--grpc-listen", "127.0.0.1:0",
           "--http-listen", "127.0.0.1:0"]
    # the S3 settings reach the collector as they would in a deployment: its environment
    child = start("collector-s3", cli, r"API on (?P<http>http://\S+) .*, lake postgres://",
                  tmp_path, env=python_env(**lake.env))
    try:
        frm, to = (t // 1_000_000_000 for t in WINDOW)
        url = (f"{child.ready.group('http')}/api/v1/flamegraph?service=svc&from={frm}&to={to}"
               "&format=folded")
        with urllib.request.urlopen(url, timeout=30) as response:
            folded = response.read().decode()
        assert folded == render_folded(profile)
        assert "main (app.py:1);serve (app.py:2);forward (app.py:3) 9" in folded.splitlines()
    finally:
        assert child.stop() == 0, child.output()


def test_a_missing_bucket_is_named_at_start_up(lake: S3Lake) -> None:
    data_path = "s3://no-such-bucket/lake/"
    with pytest.raises(StorageError, match=f"data path {data_path} .*NoSuchBucket"):
        LakeStore(lake.catalog, data_path, env=lake.env)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections and never answers (a firewall that drops packets
    looks the same to a client)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def test_a_wrong_endpoint_is_named_at_start_up_without_a_wait(lake: S3Lake) -> None:
    wrong = dict(lake.env, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")  # nothing listens
    started = time.monotonic()
    with pytest.raises(StorageError, match=f"data path {lake.data_path} does not answer through "
                       f"{wrong['AWS_ENDPOINT_URL']}: .*connect"):
        LakeStore(lake.catalog, lake.data_path, env=wrong)
    assert time.monotonic() - started < 10


def test_an_endpoint_that_never_answers_times_out(lake: S3Lake, silent_port: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # s3.CHECK_TIMEOUT_S is what bounds the wait; one second keeps the test short
    monkeypatch.setattr(s3, "CHECK_TIMEOUT_S", 1)
    silent = dict(lake.env, AWS_ENDPOINT_URL=f"http://127.0.0.1:{silent_port}")
    started = time.monotonic()
    with pytest.raises(StorageError, match=f"data path {lake.data_path} does not answer .*Timeout"):
        LakeStore(lake.catalog, lake.data_path, env=silent)
    assert time.monotonic() - started < 1 * (s3.CHECK_RETRIES + 1) + 5


def test_a_bad_endpoint_url_is_refused_before_any_request(lake: S3Lake) -> None:
    with pytest.raises(StorageError, match="AWS_ENDPOINT_URL 'minio:9000': expected http"):
        LakeStore(lake.catalog, lake.data_path, env=dict(lake.env, AWS_ENDPOINT_URL="minio:9000"))
