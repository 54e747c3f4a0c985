"""The lake's settings without a lake: --lake/--data-path, the S3 secret from the AWS
variables, and what a collector says when its DuckDB has no lake extensions."""

from __future__ import annotations

import argparse

import duckdb
import pytest

from pyrometer.agent.shared.errors import ConfigError
from pyrometer.collector import config
from pyrometer.collector.errors import StorageError
from pyrometer.collector.service import _ready_line
from pyrometer.collector.storage.lake import extensions, s3
from pyrometer.collector.storage.lake.backend import redacted

CATALOG = "postgres://pyrometer:secret@db.internal:5432/lake"


def _resolve(*argv: str, env: dict[str, str] | None = None) -> config.CollectorConfig:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return config.resolve(parser.parse_args(list(argv)), env or {})


def test_lake_flags_and_environment() -> None:
    resolved = _resolve("--lake", CATALOG, "--data-path", "s3://pyro-lake/prod")
    assert resolved.lake == config.LakeTarget(CATALOG, "s3://pyro-lake/prod/")
    assert resolved.db_path is None
    assert CATALOG not in repr(resolved)  # the password stays out of logs
    from_env = _resolve(env={"PYROMETER_LAKE": CATALOG, "PYROMETER_DATA_PATH": "/srv/lake"})
    assert from_env.lake == config.LakeTarget(CATALOG, "/srv/lake/")
    assert _resolve("--db", "x.duckdb").lake is None
    every = _resolve("--lake", CATALOG, "--data-path", "/srv", "--maintenance-interval", "90s")
    assert every.lake is not None and every.lake.maintenance_interval_s == 90.0
    assert from_env.lake.maintenance_interval_s == 300.0  # the default, 5m
    off = _resolve("--lake", CATALOG, "--data-path", "/srv", "--maintenance-interval", "off")
    assert off.lake is not None and off.lake.maintenance_interval_s is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--db", "x.duckdb", "--lake", CATALOG, "--data-path", "/srv"], "one of them"),
    (["--lake", CATALOG], "needs --data-path"),
    (["--data-path", "/srv"], "give --lake URL too"),
    (["--db", "x.duckdb", "--maintenance-interval", "1m"], "give --lake URL too"),
    (["--lake", CATALOG, "--data-path", "/srv", "--maintenance-interval", "soon"],
     "--maintenance-interval"),
    (["--lake", CATALOG, "--data-path", "/srv", "--maintenance-interval", "10ms"], "at least 1s"),
    (["--lake", "mysql://db/lake", "--data-path", "/srv"], "postgres://"),
    (["--lake", "postgres://db.internal", "--data-path", "/srv"], "DATABASE"),
    (["--lake", CATALOG, "--data-path", "relative/dir"], "absolute"),
    (["--lake", CATALOG, "--data-path", "gs://bucket/x"], "absolute"),
    (["--lake", CATALOG, "--data-path", "s3://ab/x"], "bucket name"),
    (["--lake", CATALOG, "--data-path", "s3://Upper/x"], "bucket name"),
    ([], "--db PATH is required"),
])
def test_bad_lake_settings_say_what_to_do(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _resolve(*argv)


def test_ready_line_names_the_lake_without_its_password() -> None:
    resolved = _resolve("--lake", CATALOG, "--data-path", "/srv/lake")
    line = _ready_line(resolved, 7070, "http://127.0.0.1:7071")
    assert line.endswith("lake postgres://pyrometer:***@db.internal:5432/lake data /srv/lake/")
    assert redacted("postgres://u@h/db") == "postgres://u@h/db"


def test_s3_secret_from_the_aws_variables() -> None:
    sql = s3.secret_sql({"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "it's",
                         "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert sql == ("CREATE OR REPLACE SECRET pyrometer_lake_s3 (TYPE s3, REGION 'eu-west-1', "
                   "KEY_ID 'AK', SECRET 'it''s', ENDPOINT '127.0.0.1:9000', URL_STYLE 'path', "
                   "USE_SSL false)")
    # AWS itself: virtual-host URLs over TLS, region defaulted, no credentials: anonymous
    assert s3.secret_sql({}) == ("CREATE OR REPLACE SECRET pyrometer_lake_s3 (TYPE s3, "
                                 "REGION 'us-east-1')")
    with pytest.raises(StorageError, match="AWS_ENDPOINT_URL"):
        s3.secret_sql({"AWS_ENDPOINT_URL": "minio:9000"})


@pytest.mark.skipif(extensions.extension_file("ducklake") is not None,
                    reason="this DuckDB has the lake's extensions (.venv-lake)")
def test_without_the_extensions_the_error_names_the_extra() -> None:
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    try:
        with pytest.raises(StorageError, match=r"install pyrometer\[lake\]"):
            extensions.load(con, extensions.CATALOG)
    finally:
        con.close()
