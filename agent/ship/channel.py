"""How the agent proves who it is to the collector: a bearer token and TLS.

Flags (each with a PYROMETER_* variable; a flag wins over its variable):
`--token` / `--token-file` (sent as `authorization: Bearer ...` metadata on the ingest
stream), `--tls` (verify the collector against the system's roots), `--tls-ca` (verify it
against this CA instead), `--tls-cert` / `--tls-key` (a client certificate, for a collector
that requires one), `--tls-server-name` (the name to expect in the collector's certificate
when it differs from the host in `--collector`). Any `--tls-*` flag turns TLS on.

Files are read and checked once, at start-up: a rotated certificate or token takes
effect when the agent restarts. The token and key never appear in a repr or a message.

The flag helpers themselves (tokens, certificate files) live in agent/shared/credentials.py,
shared with the collector's configuration and the CLI clients. This module imports only
the standard library at import time (the `pyrometer` command builds every subcommand's
parser); grpc is imported by `channel()`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyrometer.agent.shared import credentials

if TYPE_CHECKING:
    import grpc


@dataclass(frozen=True, slots=True)
class Security:
    """The agent's credentials; the default (nothing set) is today's plain channel."""

    token: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_pem: bytes | None = None  # None with tls: the system's trusted roots
    cert_pem: bytes | None = None
    key_pem: bytes | None = field(default=None, repr=False)
    server_name: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's credential flags (defaults None, so that variables can fill them in)."""
    credentials.add_token_arguments(parser, "bearer token the collector expects")
    parser.add_argument("--tls", action="store_true", default=None,
                        help="connect with TLS, verifying the collector against the system's "
                        "trusted roots (implied by any --tls-* flag) [PYROMETER_TLS=1]")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="CA certificate (PEM) to verify the collector with [PYROMETER_TLS_CA]")
    credentials.add_cert_arguments(parser, "client certificate (PEM) for a collector that "
                                   "requires one (mutual TLS)")
    parser.add_argument("--tls-server-name", metavar="NAME", help="name expected in the "
                        "collector's certificate, when not the --collector host "
                        "[PYROMETER_TLS_SERVER_NAME]")


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Security:
    """The agent's Security from its flags and variables; ConfigError when one is bad."""
    env = os.environ if env is None else env
    token = credentials.resolve_token(args.token, args.token_file, env)
    ca = credentials.flag_or_env(args.tls_ca, env, "PYROMETER_TLS_CA")
    pair = credentials.resolve_cert_pair(args, env)
    server_name = credentials.flag_or_env(args.tls_server_name, env, "PYROMETER_TLS_SERVER_NAME")
    tls = bool(args.tls) or env.get("PYROMETER_TLS", "") in ("1", "true", "yes")
    if ca is not None:
        credentials.check_ca(ca, "--tls-ca")
    return Security(
        token=token, tls=tls or any(v is not None for v in (ca, pair, server_name)),
        ca_pem=credentials.read_file(ca, "--tls-ca") if ca else None,
        cert_pem=credentials.read_file(pair[0], "--tls-cert") if pair else None,
        key_pem=credentials.read_file(pair[1], "--tls-key") if pair else None,
        server_name=server_name)


def call_metadata(security: Security) -> tuple[tuple[str, str], ...]:
    """Metadata for each ingest call: the bearer token, when there is one."""
    return (("authorization", f"Bearer {security.token}"),) if security.token else ()


def channel(target: str, security: Security, *, options: Sequence[tuple[str, Any]] = (),
            compression: grpc.Compression | None = None) -> grpc.aio.Channel:
    """A grpc.aio channel to `target`: plain, or TLS (with a client certificate) per `security`.

    The token is not attached here but per call (`call_metadata`), so that it also works
    on a plain channel, e.g. behind a service mesh that does the TLS.
    """
    import grpc  # here, not at the top: see the module docstring

    if not security.tls:
        return grpc.aio.insecure_channel(target, options=list(options), compression=compression)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=security.ca_pem, private_key=security.key_pem,
        certificate_chain=security.cert_pem)
    extra = [("grpc.ssl_target_name_override", security.server_name)] if security.server_name else []
    return grpc.aio.secure_channel(target, credentials, options=[*options, *extra],
                                   compression=compression)
