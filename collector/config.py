"""The collector's configuration: flag > PYROMETER_* environment variable > default.

Standard library only: the `pyrometer` command imports this to build its parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrometer.agent.shared import credentials
from pyrometer.agent.shared.errors import ConfigError

if TYPE_CHECKING:
    from pyrometer.collector.alerts.config import AlertConfig
    from pyrometer.collector.analysis.slo import Objective
    from pyrometer.collector.analysis.stages import StageRule

_LISTEN = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]*):(\d{1,5})$")


@dataclass(frozen=True, slots=True)
class Tokens:
    """Bearer tokens: `write` gates ingest and every request that changes something;
    reads take `read` or `write`, and only `write` when there is no separate `read`.
    Neither set: everything is open."""

    write: str | None = field(default=None, repr=False)
    read: str | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.write is not None


@dataclass(frozen=True, slots=True)
class ServerTls:
    """PEM files: the server's certificate and key (gRPC and HTTPS), and optionally the CA
    that agents' client certificates must be signed by (then gRPC requires one)."""

    cert_path: str
    key_path: str
    client_ca_path: str | None = None


@dataclass(frozen=True, slots=True)
class LakeTarget:
    """Where the lake backend stores (docs/lake.md): the PostgreSQL catalog, as a libpq URL,
    and the data path, s3://BUCKET/PREFIX or an absolute local folder."""

    catalog: str = field(repr=False)  # may hold a password
    data_path: str
    # between maintenance passes (retention, merging files, expiring snapshots), which the
    # collectors take turns at (storage/lake/maintenance.py); None: this collector takes
    # no turn (another collector of the lake, or a job of its own, must)
    maintenance_interval_s: float | None = 300.0


# ingest/commit.py's DEFAULT_DELAY_S, which says why (not imported from there: the
# command line's parsing should not load the ingest path; a test keeps the two equal)
DEFAULT_COMMIT_DELAY_MS = 100.0


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    db_path: str | None  # the embedded backend's file; None with `lake`
    grpc_listen: str = "127.0.0.1:7070"
    http_listen: str = "127.0.0.1:7071"
    # how long a commit group waits for more batches (ingest/commit.py says why)
    commit_delay_ms: float = DEFAULT_COMMIT_DELAY_MS
    # processes decoding ingest beside the writer; 0 decodes in it (ingest/workers.py
    # says when more pays)
    decode_workers: int = 0
    tokens: Tokens = Tokens()
    # delete data older than this (None: keep everything); see retention.py
    retention_ns: int | None = 7 * 86_400 * 1_000_000_000
    retention_interval_s: float = 300.0
    # profile rollups are kept this long (never shorter than retention_ns)
    rollup_retention_ns: int | None = 90 * 86_400 * 1_000_000_000
    tls: ServerTls | None = None
    # pipeline stage rules: the user's file's before the defaults; None: the defaults
    stage_rules: tuple[StageRule, ...] | None = None
    objectives: tuple[Objective, ...] = ()  # latency SLOs (analysis/slo.py)
    alerts: AlertConfig | None = None  # webhooks for spikes and SLO changes (alerts/)
    trace_url: str = ""  # e.g. https://tempo.example/trace/{trace_id}: links to traces
    lake: LakeTarget | None = None  # many collectors, one DuckLake, instead of db_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="DuckDB file to store data in [PYROMETER_DB]")
    parser.add_argument("--lake", metavar="URL", help="store in a DuckLake shared with other "
                        "collectors instead: its PostgreSQL catalog, e.g. "
                        "postgres://user@host:5432/pyrometer (needs pyrometer[lake]; "
                        "docs/lake.md) [PYROMETER_LAKE]")
    parser.add_argument("--data-path", metavar="PATH", help="with --lake: where its Parquet "
                        "files go, s3://bucket/prefix (endpoint and credentials from the AWS_* "
                        "variables) or an absolute local folder [PYROMETER_DATA_PATH]")
    parser.add_argument("--maintenance-interval", metavar="DURATION", help="with --lake: "
                        "time between maintenance passes, which the collectors take turns "
                        "at: retention, merging small files, expiring snapshots (default 5m; "
                        "replaces --retention-interval); off: this collector takes no turn, so "
                        "another must [PYROMETER_MAINTENANCE_INTERVAL]")
    parser.add_argument("--grpc-listen", help="agent ingest address (default 127.0.0.1:7070; "
                        "port 0 picks a free one) [PYROMETER_GRPC_LISTEN]")
    parser.add_argument("--http-listen", help="HTTP API address (default 127.0.0.1:7071) "
                        "[PYROMETER_HTTP_LISTEN]")
    parser.add_argument("--commit-delay-ms", type=float,
                        help="how long a batch waits for others to share its commit, in "
                        f"milliseconds (default {DEFAULT_COMMIT_DELAY_MS:g})")
    parser.add_argument("--decode-workers", metavar="N", help="processes that decode agents' "
                        "batches beside the one that stores them, for a collector at the limit "
                        "of its CPU with cores to spare (default 0: decode in the collector's "
                        "own process, the cheaper way while it keeps up) "
                        "[PYROMETER_DECODE_WORKERS]")
    parser.add_argument("--retention", metavar="DURATION", help="delete data older than "
                        "this, in the background (default 7d; e.g. 36h, 2w; 0 or off keeps "
                        "everything) [PYROMETER_RETENTION]")
    parser.add_argument("--retention-interval", metavar="DURATION", help="time between "
                        "retention passes (default 5m) [PYROMETER_RETENTION_INTERVAL]")
    parser.add_argument("--rollup-retention", metavar="DURATION", help="keep the per-minute "
                        "and per-hour profile rollups and the latency sketches this long "
                        "(default 90d, never shorter than --retention) "
                        "[PYROMETER_ROLLUP_RETENTION]")
    credentials.add_token_arguments(parser, "token agents and API clients must send (ingest, "
                                    "POST; also reads without --read-token)")
    credentials.add_token_arguments(parser, "read-only token for the API's GET endpoints",
                                    prefix="read-", env_prefix="READ_")
    credentials.add_cert_arguments(parser, "certificate (PEM) to serve gRPC with TLS and the "
                                   "API as HTTPS")
    parser.add_argument("--tls-client-ca", metavar="FILE", help="CA (PEM) whose client "
                        "certificates agents must present on gRPC (mutual TLS) "
                        "[PYROMETER_TLS_CLIENT_CA]")
    parser.add_argument("--stages", metavar="FILE", help="JSON file of pipeline stage rules, "
                        'e.g. {"stages": [{"stage": "retrieval", "function": "knn_search"}]}, '
                        "matched before the built-in ones (tokenization, forward pass, pre- "
                        "and post-processing) [PYROMETER_STAGES]")
    parser.add_argument("--slos", metavar="FILE", help="JSON file of latency objectives, e.g. "
                        '{"slos": [{"name": "predict", "service": "model", "objective": 0.99, '
                        '"threshold_ms": 300, "period": "28d"}]}, served with their budget and '
                        "burn rates at /api/v1/slos [PYROMETER_SLOS]")
    parser.add_argument("--trace-url", metavar="TEMPLATE", help="link a spike's slowest "
                        "requests to their traces: a URL with {trace_id} in it, e.g. "
                        "https://tempo.example/explore?traceId={trace_id} (Tempo, Jaeger) "
                        "[PYROMETER_TRACE_URL]")
    parser.add_argument("--alerts", metavar="FILE", help="JSON file of webhooks to notify of "
                        'spikes and SLO changes, e.g. {"webhooks": [{"url": "https://...", '
                        '"format": "slack"}]} (formats json, slack, alertmanager) '
                        "[PYROMETER_ALERTS]")


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> CollectorConfig:
    env = os.environ if env is None else env
    db = args.db or env.get("PYROMETER_DB")
    lake = _lake(args, env)
    if lake is not None and db:
        raise ConfigError("--db and --lake both given: a collector stores in one of them")
    if lake is None and not db:
        raise ConfigError("--db PATH is required (or PYROMETER_DB): the DuckDB file to store data in "
                          "(or --lake URL --data-path PATH for a lake shared by many collectors)")
    grpc_listen = args.grpc_listen or env.get("PYROMETER_GRPC_LISTEN") or "127.0.0.1:7070"
    http_listen = args.http_listen or env.get("PYROMETER_HTTP_LISTEN") or "127.0.0.1:7071"
    for flag, value in (("--grpc-listen", grpc_listen), ("--http-listen", http_listen)):
        check_listen(flag, value)
    delay = args.commit_delay_ms if args.commit_delay_ms is not None else DEFAULT_COMMIT_DELAY_MS
    if not 0 <= delay <= 1000:
        raise ConfigError(f"--commit-delay-ms {delay}: expected 0-1000")
    retention, interval = _retention(args, env)
    return CollectorConfig(db_path=db, grpc_listen=grpc_listen, http_listen=http_listen,
                           commit_delay_ms=delay, decode_workers=_decode_workers(args, env),
                           tokens=_tokens(args, env), tls=_tls(args, env),
                           retention_ns=retention, retention_interval_s=interval,
                           stage_rules=_stage_rules(args, env), objectives=_objectives(args, env),
                           alerts=_alerts(args, env), trace_url=_trace_url(args, env),
                           rollup_retention_ns=_rollup_retention(args, env, retention), lake=lake)


MAX_DECODE_WORKERS = 64


def _decode_workers(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    text = args.decode_workers or env.get("PYROMETER_DECODE_WORKERS") or "0"
    if not text.strip().isdigit() or int(text) > MAX_DECODE_WORKERS:
        raise ConfigError(f"--decode-workers {text!r}: expected a count, 0-{MAX_DECODE_WORKERS}")
    return int(text)


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's rule: 3 to 63 characters


def _lake(args: argparse.Namespace, env: Mapping[str, str]) -> LakeTarget | None:
    catalog = getattr(args, "lake", None) or env.get("PYROMETER_LAKE")
    data_path = getattr(args, "data_path", None) or env.get("PYROMETER_DATA_PATH")
    every = (getattr(args, "maintenance_interval", None)
             or env.get("PYROMETER_MAINTENANCE_INTERVAL"))
    if not catalog:
        for flag, given in (("--data-path", "data_path"), ("--maintenance-interval",
                                                           "maintenance_interval")):
            if getattr(args, given, None):
                raise ConfigError(f"{flag} is for the lake: give --lake URL too")
        return None
    if not re.match(r"^postgres(ql)?://[^/\s]+/[^/\s?]+", catalog):
        raise ConfigError("--lake: expected the PostgreSQL catalog as postgres://USER@HOST[:PORT]/DATABASE")
    if not data_path:
        raise ConfigError("--lake needs --data-path (or PYROMETER_DATA_PATH): s3://bucket/prefix "
                          "or an absolute local folder, where the lake's Parquet files go")
    if data_path.startswith("s3://"):
        bucket = data_path[len("s3://"):].split("/", 1)[0]
        if not _BUCKET.match(bucket):
            raise ConfigError(f"--data-path {data_path}: {bucket!r} is not an S3 bucket name "
                              "(3-63 lower-case letters, digits, dots and hyphens)")
    elif "://" in data_path or not Path(data_path).is_absolute():
        raise ConfigError(f"--data-path {data_path}: expected s3://bucket/prefix or an absolute "
                          "local folder")
    # DuckLake joins file names onto the data path: one trailing slash, never two
    path = data_path.rstrip("/") + "/"
    if (every or "").strip().lower() == "off":
        return LakeTarget(catalog, path, None)
    from pyrometer.collector.timeparse import TimeFormatError, parse_duration

    try:
        interval_s = parse_duration(every or "5m") / 1e9
    except TimeFormatError as err:
        raise ConfigError(f"--maintenance-interval: {err}") from None
    if interval_s < 1:
        raise ConfigError(f"--maintenance-interval {every}: at least 1s")
    return LakeTarget(catalog, path, interval_s)


def _trace_url(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    template = getattr(args, "trace_url", None) or env.get("PYROMETER_TRACE_URL") or ""
    if template and (not re.match(r"^https?://[^/\s]+", template)
                     or "{trace_id}" not in template):
        raise ConfigError(f"--trace-url {template!r}: expected an http(s) URL with {{trace_id}} "
                          "in it, e.g. https://tempo.example/trace/{trace_id}")
    return template


def _alerts(args: argparse.Namespace, env: Mapping[str, str]) -> AlertConfig | None:
    found: AlertConfig | None = _settings_file(args, env, "alerts",
                                               "pyrometer.collector.alerts.config:load_alerts")
    return found


def _objectives(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Objective, ...]:
    found: tuple[Objective, ...] | None = _settings_file(
        args, env, "slos", "pyrometer.collector.analysis.slo:load_objectives")
    return found or ()


def _stage_rules(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[StageRule, ...] | None:
    found: tuple[StageRule, ...] | None = _settings_file(
        args, env, "stages", "pyrometer.collector.analysis.stages:load_rules")
    return found


def _settings_file(args: argparse.Namespace, env: Mapping[str, str], flag: str,
                   loader: str) -> Any:
    """What `loader` ("module:function") makes of the JSON file named by --FLAG (or
    PYROMETER_FLAG); None without one. The loader is imported only when there is a
    file: the CLI parser imports this module and must stay light."""
    path = getattr(args, flag, None) or env.get(f"PYROMETER_{flag.upper()}")
    if not path:
        return None
    from pyrometer.collector.jsonfile import FileConfigError

    module, _, function = loader.partition(":")
    try:
        return getattr(importlib.import_module(module), function)(Path(path))
    except FileConfigError as err:
        raise ConfigError(str(err)) from None


def _retention(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[int | None, float]:
    # imported here: the CLI parser imports this module and must stay light
    from pyrometer.collector.storage.retention import DEFAULT_RETENTION, parse_retention
    from pyrometer.collector.timeparse import TimeFormatError, parse_duration

    text = getattr(args, "retention", None) or env.get("PYROMETER_RETENTION") or DEFAULT_RETENTION
    every = (getattr(args, "retention_interval", None) or env.get("PYROMETER_RETENTION_INTERVAL")
             or "5m")
    try:
        retention = parse_retention(text)
    except TimeFormatError as err:
        raise ConfigError(f"--retention: {err}") from None
    try:
        interval_s = parse_duration(every) / 1e9
    except TimeFormatError as err:
        raise ConfigError(f"--retention-interval: {err}") from None
    return retention, interval_s


def _rollup_retention(args: argparse.Namespace, env: Mapping[str, str],
                      retention: int | None) -> int | None:
    from pyrometer.collector.storage.retention import DEFAULT_ROLLUP_RETENTION, parse_retention
    from pyrometer.collector.timeparse import TimeFormatError

    text = (getattr(args, "rollup_retention", None) or env.get("PYROMETER_ROLLUP_RETENTION")
            or DEFAULT_ROLLUP_RETENTION)
    try:
        kept = parse_retention(text)
    except TimeFormatError as err:
        raise ConfigError(f"--rollup-retention: {err}") from None
    if retention is None or kept is None:
        return None  # raw rows kept for ever, or rollups asked to be: keep them all
    return max(kept, retention)


def _tokens(args: argparse.Namespace, env: Mapping[str, str]) -> Tokens:
    write = credentials.resolve_token(args.token, args.token_file, env)
    read = credentials.resolve_token(args.read_token, args.read_token_file, env,
                                     prefix="read-", env_prefix="READ_")
    if read is not None and write is None:
        # open ingest and POST behind a guarded GET would protect nothing worth having
        raise ConfigError("--read-token needs --token too (or PYROMETER_TOKEN): the read-only "
                          "token is an addition to the main one")
    return Tokens(write=write, read=read)


def _tls(args: argparse.Namespace, env: Mapping[str, str]) -> ServerTls | None:
    client_ca = credentials.flag_or_env(args.tls_client_ca, env, "PYROMETER_TLS_CLIENT_CA")
    pair = credentials.resolve_cert_pair(args, env)
    if pair is None:
        if client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key: client "
                              "certificates are checked only over TLS")
        return None
    if client_ca is not None:
        credentials.check_ca(client_ca, "--tls-client-ca")
    return ServerTls(cert_path=pair[0], key_path=pair[1], client_ca_path=client_ca)


def check_listen(flag: str, value: str) -> tuple[str, int]:
    match = _LISTEN.match(value)
    if not match or int(match.group(2)) > 65535:
        raise ConfigError(f"{flag} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:7071")
    return match.group(1).strip("[]") or "0.0.0.0", int(match.group(2))
