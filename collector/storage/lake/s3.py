"""The S3 secret of a lake whose data path is s3://..., from the standard AWS variables,
and the start-up check that the data path's bucket answers.

AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (optional; none at all
means anonymous requests), AWS_REGION or AWS_DEFAULT_REGION (default us-east-1), and
AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for an S3-compatible store other than AWS (MinIO,
Ceph, moto): then path-style URLs, and TLS only for an https endpoint. DuckDB's
credential_chain provider would need the aws extension, which has no wheel.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import duckdb

from pyrometer.collector.errors import StorageError
from pyrometer.collector.storage.lake.extensions import literal as _literal

# The check lists a key prefix that holds nothing: one ListObjectsV2 request however many
# files the lake has, read-only, nothing left behind (so the credentials need s3:ListBucket).
_CHECK_PREFIX = "pyrometer-start-check-"
# DuckDB's own HTTP settings (30 s a try, 3 retries) would keep a collector whose endpoint
# drops packets silent for two minutes before it says why; a listing that finds nothing
# answers within a second on any store that works, so the check alone gets a shorter leash.
# The lake's own reads and writes keep DuckDB's settings: S3 asks clients to retry (503
# SlowDown) as a matter of course.
CHECK_TIMEOUT_S = 5
CHECK_RETRIES = 1


def endpoint(env: Mapping[str, str]) -> str | None:
    """The S3-compatible endpoint the variables name; None for AWS itself."""
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def _region(env: Mapping[str, str]) -> str:
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"


def secret_sql(env: Mapping[str, str]) -> str:
    """CREATE SECRET for the data path's bucket; raises StorageError for a bad endpoint."""
    options = {"TYPE": "s3", "REGION": _literal(_region(env))}
    for option, variable in (("KEY_ID", "AWS_ACCESS_KEY_ID"), ("SECRET", "AWS_SECRET_ACCESS_KEY"),
                             ("SESSION_TOKEN", "AWS_SESSION_TOKEN")):
        if env.get(variable):
            options[option] = _literal(env[variable])
    if url_text := endpoint(env):
        url = urlsplit(url_text)
        if url.scheme not in ("http", "https") or not url.netloc or url.path not in ("", "/"):
            raise StorageError(f"AWS_ENDPOINT_URL {url_text!r}: expected http(s)://HOST[:PORT]")
        options |= {"ENDPOINT": _literal(url.netloc), "URL_STYLE": "'path'",
                    "USE_SSL": "true" if url.scheme == "https" else "false"}
    return ("CREATE OR REPLACE SECRET pyrometer_lake_s3 ("
            + ", ".join(f"{k} {v}" for k, v in options.items()) + ")")


def check_reachable(con: duckdb.DuckDBPyConnection, data_path: str, env: Mapping[str, str]) -> None:
    """Raise StorageError unless the bucket of `data_path` answers a listing through the
    secret of `env` (made on `con` beforehand).

    A lake's ATTACH never touches its data path, and DuckLake keeps commits of a few rows in
    the catalog: without this check a wrong endpoint or a missing bucket would show only at
    the first commit large enough for a Parquet file, long after start-up.
    """
    probe = data_path.rstrip("/") + "/" + _CHECK_PREFIX + "*"
    con.execute(f"SET http_timeout = {CHECK_TIMEOUT_S}")
    con.execute(f"SET http_retries = {CHECK_RETRIES}")
    try:
        con.execute(f"SELECT count(*) FROM glob({_literal(probe)})").fetchall()
    except duckdb.Error as exc:
        where = endpoint(env) or f"AWS S3 in {_region(env)}"
        raise StorageError(
            f"the lake's data path {data_path} does not answer through {where}: {_one_line(exc)} "
            "(check AWS_ENDPOINT_URL, the bucket's name and the AWS credentials)") from exc
    finally:
        con.execute("RESET http_timeout")
        con.execute("RESET http_retries")


def _one_line(exc: duckdb.Error) -> str:
    """DuckDB's message without the blank lines and the echo of the query under it."""
    lines = []
    for line in str(exc).splitlines():
        if line.startswith("LINE "):
            break
        if line.strip():
            lines.append(line.strip())
    return ": ".join(lines)
