"""The S3 secret of a lake whose data path is s3://..., from the standard AWS variables.

AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (optional; none at all
means anonymous requests), AWS_REGION or AWS_DEFAULT_REGION (default us-east-1), and
AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for an S3-compatible store other than AWS (MinIO,
Ceph, moto): then path-style URLs, and TLS only for an https endpoint. DuckDB's
credential_chain provider would need the aws extension, which has no wheel.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from pyrometer.collector.errors import StorageError
from pyrometer.collector.storage.lake.extensions import literal as _literal


def secret_sql(env: Mapping[str, str]) -> str:
    """CREATE SECRET for the data path's bucket; raises StorageError for a bad endpoint."""
    options = {"TYPE": "s3",
               "REGION": _literal(env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
                                  or "us-east-1")}
    for option, variable in (("KEY_ID", "AWS_ACCESS_KEY_ID"), ("SECRET", "AWS_SECRET_ACCESS_KEY"),
                             ("SESSION_TOKEN", "AWS_SESSION_TOKEN")):
        if env.get(variable):
            options[option] = _literal(env[variable])
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.netloc or url.path not in ("", "/"):
            raise StorageError(f"AWS_ENDPOINT_URL {endpoint!r}: expected http(s)://HOST[:PORT]")
        options |= {"ENDPOINT": _literal(url.netloc), "URL_STYLE": "'path'",
                    "USE_SSL": "true" if url.scheme == "https" else "false"}
    return ("CREATE OR REPLACE SECRET pyrometer_lake_s3 ("
            + ", ".join(f"{k} {v}" for k, v in options.items()) + ")")
