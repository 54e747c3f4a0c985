"""The collector's TLS material: gRPC server credentials and the HTTPS context.

Both read the files named in `ServerTls` (checked at start-up by config.resolve), so a
renewed certificate takes effect when the collector restarts. Client certificates are
required only on gRPC: the API's clients (the CLI, browsers, dashboards) authenticate
with the token instead.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from pyrometer.collector.config import ServerTls


def grpc_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """Credentials for the ingest port; with a client CA, agents must present a
    certificate it signed (mutual TLS) or the handshake fails."""
    key, cert = Path(tls.key_path).read_bytes(), Path(tls.cert_path).read_bytes()
    client_ca = Path(tls.client_ca_path).read_bytes() if tls.client_ca_path else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)


def https_context(tls: ServerTls) -> ssl.SSLContext:
    """The HTTP API's server context (TLS 1.2 at least, Python's default ciphers)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_path, tls.key_path)
    return context
