"""The collector's configuration: flag > PYROMETER_* environment variable > default.

Standard library only: the `pyrometer` command imports this to build its parser.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pyrometer.agent.errors import ConfigError

_LISTEN = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]*):(\d{1,5})$")


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    db_path: str
    grpc_listen: str = "127.0.0.1:7070"
    http_listen: str = "127.0.0.1:7071"
    commit_delay_ms: float = 5.0  # how long a commit group waits for more batches


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="DuckDB file to store data in [PYROMETER_DB]")
    parser.add_argument("--grpc-listen", help="agent ingest address (default 127.0.0.1:7070; "
                        "port 0 picks a free one) [PYROMETER_GRPC_LISTEN]")
    parser.add_argument("--http-listen", help="HTTP API address (default 127.0.0.1:7071) "
                        "[PYROMETER_HTTP_LISTEN]")
    parser.add_argument("--commit-delay-ms", type=float,
                        help="group commit window in milliseconds (default 5)")


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> CollectorConfig:
    env = os.environ if env is None else env
    db = args.db or env.get("PYROMETER_DB")
    if not db:
        raise ConfigError("--db PATH is required (or PYROMETER_DB): the DuckDB file to store data in")
    grpc_listen = args.grpc_listen or env.get("PYROMETER_GRPC_LISTEN") or "127.0.0.1:7070"
    http_listen = args.http_listen or env.get("PYROMETER_HTTP_LISTEN") or "127.0.0.1:7071"
    for flag, value in (("--grpc-listen", grpc_listen), ("--http-listen", http_listen)):
        check_listen(flag, value)
    delay = args.commit_delay_ms if args.commit_delay_ms is not None else 5.0
    if not 0 <= delay <= 1000:
        raise ConfigError(f"--commit-delay-ms {delay}: expected 0-1000")
    return CollectorConfig(db_path=db, grpc_listen=grpc_listen, http_listen=http_listen,
                           commit_delay_ms=delay)


def check_listen(flag: str, value: str) -> tuple[str, int]:
    match = _LISTEN.match(value)
    if not match or int(match.group(2)) > 65535:
        raise ConfigError(f"{flag} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:7071")
    return match.group(1).strip("[]") or "0.0.0.0", int(match.group(2))
