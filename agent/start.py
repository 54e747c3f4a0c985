"""`pyrometer agent`'s entry: resolve the configuration, then decide what the agent's
process loads before it loads it.

asyncio imports Python's ssl module wherever it can, and grpc imports asyncio. ssl brings
OpenSSL's libcrypto and libssl: about 3.4 MiB of the agent's resident memory, a tenth of
it (row 2 of BENCHMARKS.md). The agent uses none of it unless it scrapes the model
server's metrics (--scrape: urllib and prometheus_client import ssl), reverse-proxies
requests (--proxy: aiohttp, whose upstream may be an https URL) or checks a certificate
file given with --tls-ca or --tls-cert (which resolving the configuration does, and so
imports ssl before this module decides). gRPC's TLS to the collector is
gRPC's own (BoringSSL, inside grpc's extension) and never goes through Python's ssl.

Otherwise the agent marks ssl as absent (None in sys.modules) before the imports that
would load it. asyncio and every other module the agent loads import it inside
`try: ... except ImportError` and then run as they do on a Python built without OpenSSL;
a new import that requires ssl fails at start-up with ImportError, where
tests/unit/test_cli_imports.py runs the agent's imports without ssl.
"""

from __future__ import annotations

import argparse
import sys

from pyrometer.agent.config import AgentConfig, resolve


def main(args: argparse.Namespace) -> int:
    config = resolve(args)
    if not needs_python_ssl(config):
        without_python_ssl()
    from pyrometer.agent import run  # asyncio and grpc: after the decision

    return run.main(config)


def needs_python_ssl(config: AgentConfig) -> bool:
    """Whether the running agent uses Python's ssl module: to scrape metrics, or to
    proxy requests."""
    return config.scrape is not None or config.proxy is not None


def without_python_ssl() -> None:
    """Make `import ssl` raise ImportError from now on, unless something already loaded
    it (resolving --tls-ca or --tls-cert files does): then it stays."""
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
