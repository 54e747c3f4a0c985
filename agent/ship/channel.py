"""How the agent proves who it is to the collector: a bearer token and TLS.

Flags (each with a PYROMETER_* variable; a flag wins over its variable):
`--token` / `--token-file` (sent as `authorization: Bearer ...` metadata on the ingest
stream), `--tls` (verify the collector against the system's roots), `--tls-ca` (verify it
against this CA instead), `--tls-cert` / `--tls-key` (a client certificate, for a collector
that requires one), `--tls-server-name` (the name to expect in the collector's certificate
when it differs from the host in `--collector`). Any `--tls-*` flag turns TLS on.

Files are read and checked once, at start-up: a rotated certificate or token takes
effect when the agent restarts. The token and key never appear in a repr or a message.

The token helpers here are shared with the collector's configuration and the CLI
clients, so this module imports only the standard library at import time (the
`pyrometer` command builds every subcommand's parser); grpc is imported by `channel()`.
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrometer.agent.shared.errors import ConfigError

if TYPE_CHECKING:
    import grpc

MAX_TOKEN_LEN = 4096


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
    add_token_arguments(parser, "bearer token the collector expects")
    parser.add_argument("--tls", action="store_true", default=None,
                        help="connect with TLS, verifying the collector against the system's "
                        "trusted roots (implied by any --tls-* flag) [PYROMETER_TLS=1]")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="CA certificate (PEM) to verify the collector with [PYROMETER_TLS_CA]")
    parser.add_argument("--tls-cert", metavar="FILE", help="client certificate (PEM) for a "
                        "collector that requires one (mutual TLS) [PYROMETER_TLS_CERT]")
    parser.add_argument("--tls-key", metavar="FILE",
                        help="private key (PEM) of --tls-cert [PYROMETER_TLS_KEY]")
    parser.add_argument("--tls-server-name", metavar="NAME", help="name expected in the "
                        "collector's certificate, when not the --collector host "
                        "[PYROMETER_TLS_SERVER_NAME]")


def add_token_arguments(parser: argparse.ArgumentParser, what: str, prefix: str = "",
                        env_prefix: str = "") -> None:
    """`--{prefix}token` and `--{prefix}token-file`, shared by agent, collector and CLI."""
    env = f"PYROMETER_{env_prefix}TOKEN"
    parser.add_argument(f"--{prefix}token", metavar="TOKEN",
                        help=f"{what}; visible to other local users in the process list, so "
                        f"prefer --{prefix}token-file [{env}]")
    parser.add_argument(f"--{prefix}token-file", metavar="FILE",
                        help=f"file holding the {what} (surrounding whitespace ignored) [{env}_FILE]")


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Security:
    """The agent's Security from its flags and variables; ConfigError when one is bad."""
    env = os.environ if env is None else env
    token = resolve_token(args.token, args.token_file, env)
    ca = _flag_or_env(args.tls_ca, env, "PYROMETER_TLS_CA")
    cert = _flag_or_env(args.tls_cert, env, "PYROMETER_TLS_CERT")
    key = _flag_or_env(args.tls_key, env, "PYROMETER_TLS_KEY")
    server_name = _flag_or_env(args.tls_server_name, env, "PYROMETER_TLS_SERVER_NAME")
    tls = bool(args.tls) or env.get("PYROMETER_TLS", "") in ("1", "true", "yes")
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    if cert is not None and key is not None:
        check_cert_and_key(cert, key, "--tls-cert", "--tls-key")
    if ca is not None:
        check_ca(ca, "--tls-ca")
    return Security(
        token=token, tls=tls or any(v is not None for v in (ca, cert, server_name)),
        ca_pem=read_file(ca, "--tls-ca") if ca else None,
        cert_pem=read_file(cert, "--tls-cert") if cert else None,
        key_pem=read_file(key, "--tls-key") if key else None,
        server_name=server_name)


def resolve_token(flag: str | None, file_flag: str | None, env: Mapping[str, str],
                  prefix: str = "", env_prefix: str = "") -> str | None:
    """A token from `--{prefix}token`, its file flag, or PYROMETER_{env_prefix}TOKEN[_FILE].

    Either flag wins over both variables; two sources on the same level is a ConfigError,
    as is an empty or malformed token. The message never contains the token.
    """
    name, var = f"--{prefix}token", f"PYROMETER_{env_prefix}TOKEN"
    for (value, value_name), (path, path_name) in (
        ((flag, name), (file_flag, f"{name}-file")),
        ((env.get(var) or None, var), (env.get(f"{var}_FILE") or None, f"{var}_FILE")),
    ):
        if value is not None and path is not None:
            raise ConfigError(f"{value_name} and {path_name} both given: use one")
        if value is not None:
            return check_token(value.strip(), value_name)
        if path is not None:
            return check_token(read_file(path, path_name).decode("utf-8", "replace").strip(),
                               f"{path_name} {path}")
    return None


def check_token(token: str, source: str) -> str:
    """The token, if it can travel in an HTTP header and gRPC metadata (visible ASCII)."""
    if not token:
        raise ConfigError(f"{source}: the token is empty")
    if len(token) > MAX_TOKEN_LEN or not all("!" <= c <= "~" for c in token):
        raise ConfigError(f"{source}: a token must be 1-{MAX_TOKEN_LEN} visible ASCII characters "
                          "without spaces")
    return token


def read_file(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"{flag} {path}: cannot read it: {err.strerror}") from None


def check_ca(path: str, flag: str) -> None:
    """ConfigError unless `path` holds at least one PEM certificate."""
    try:
        ssl.create_default_context(cadata=read_file(path, flag).decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(f"{flag} {path}: not a PEM certificate ({err})") from None


def check_cert_and_key(cert: str, key: str, cert_flag: str, key_flag: str) -> None:
    """ConfigError unless `cert` and `key` are a matching PEM certificate and key."""
    read_file(cert, cert_flag)  # an unreadable file gets the plainer message
    read_file(key, key_flag)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
    except ssl.SSLError as err:
        raise ConfigError(f"{cert_flag} {cert} / {key_flag} {key}: not a PEM certificate and "
                          f"its matching unencrypted key ({err.reason or err})") from None


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


def _flag_or_env(flag: str | None, env: Mapping[str, str], name: str) -> str | None:
    return flag if flag is not None else (env.get(name) or None)
