"""Credential flags shared by the agent, the collector and the CLI clients: bearer tokens
and PEM certificate files, each flag with a PYROMETER_* variable (a flag wins over it).

Standard library only: the collector and the `pyrometer` command's parser import this.
Files are read and checked once, at start-up. A token or key never appears in a message.

Python's ssl module is imported only to check certificate files: an agent given none must
not load it (agent/start.py says why).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from pyrometer.agent.shared.errors import ConfigError

MAX_TOKEN_LEN = 4096


def add_token_arguments(parser: argparse.ArgumentParser, what: str, prefix: str = "",
                        env_prefix: str = "") -> None:
    """`--{prefix}token` and `--{prefix}token-file`, shared by agent, collector and CLI."""
    env = f"PYROMETER_{env_prefix}TOKEN"
    parser.add_argument(f"--{prefix}token", metavar="TOKEN",
                        help=f"{what}; visible to other local users in the process list, so "
                        f"prefer --{prefix}token-file [{env}]")
    parser.add_argument(f"--{prefix}token-file", metavar="FILE",
                        help=f"file holding the {what} (surrounding whitespace ignored) [{env}_FILE]")


def add_cert_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """`--tls-cert` and `--tls-key`: the agent's client certificate or the collector's own."""
    parser.add_argument("--tls-cert", metavar="FILE", help=f"{what} [PYROMETER_TLS_CERT]")
    parser.add_argument("--tls-key", metavar="FILE",
                        help="private key (PEM) of --tls-cert [PYROMETER_TLS_KEY]")


def resolve_cert_pair(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(cert, key) paths from `--tls-cert`/`--tls-key` or their variables, checked to be a
    matching PEM certificate and key; None when neither is given, ConfigError for one."""
    cert = flag_or_env(args.tls_cert, env, "PYROMETER_TLS_CERT")
    key = flag_or_env(args.tls_key, env, "PYROMETER_TLS_KEY")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    check_cert_and_key(cert, key, "--tls-cert", "--tls-key")
    return cert, key


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
    import ssl  # here, not at the top: see the module's docstring

    try:
        ssl.create_default_context(cadata=read_file(path, flag).decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(f"{flag} {path}: not a PEM certificate ({err})") from None


def check_cert_and_key(cert: str, key: str, cert_flag: str, key_flag: str) -> None:
    """ConfigError unless `cert` and `key` are a matching PEM certificate and key."""
    import ssl  # here, not at the top: see the module's docstring

    read_file(cert, cert_flag)  # an unreadable file gets the plainer message
    read_file(key, key_flag)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key)
    except ssl.SSLError as err:
        raise ConfigError(f"{cert_flag} {cert} / {key_flag} {key}: not a PEM certificate and "
                          f"its matching unencrypted key ({err.reason or err})") from None


def flag_or_env(flag: str | None, env: Mapping[str, str], name: str) -> str | None:
    """The flag's value when given, else the variable's when set and not empty."""
    return flag if flag is not None else (env.get(name) or None)
