"""Pyrometer's demo model server: a small text classifier behind a WSGI app.

Run it by path (it is not part of the installed distribution)::

    python deploy/demo/model_server.py --host 127.0.0.1 --port 0 --workers 4

Once it accepts connections it prints exactly one line to stdout,
``model-server listening on http://HOST:PORT``, and serves until SIGTERM or SIGINT.

Endpoints: ``POST /v1/predict`` with ``{"text": str, "top_k"?: int, "debug"?: bool}``,
``GET /healthz``, ``GET /v1/info``. A request with ``"debug": true`` gets a ``debug``
object naming the forward and post-processing functions that ran; ``/v1/info`` names
them too, with the active switches.

Fault-injection switches, read from the environment at startup:

- ``APP_VERSION``: reported by ``/v1/info`` and in every prediction (default ``dev``).
- ``DEMO_SLOW_VERSIONS``: comma-separated versions that run ``model_forward_slow``;
  ``DEMO_SLOW_FORWARD=1`` does so whatever the version. Same answers, higher cost.
- ``DEMO_COSTLY_POSTPROCESS=1``: ``postprocess_render_json_costly`` (adds per-label
  word explanations computed in pure Python).
- ``DEMO_SLOWDOWN_FILE=PATH``: the GPU-throttle simulation for machines without a
  GPU. While PATH holds a number f > 1, each forward pass is followed by a wait of
  (f - 1) times its own duration in ``simulated_device_wait``, as a throttled device
  would stretch the kernels the host waits on. The file is re-read at most once a
  second; a missing or unreadable file means f = 1.
- ``DEMO_FLAGS_FILE=PATH``: runtime feature flags, ``name=1`` or ``name=0`` per line,
  re-read at most once a second, so a code path can change without a restart (a
  flag flip, not a deploy). ``costly_postprocess=1`` there switches the costly
  post-processing on (and ``=0`` off) whatever ``DEMO_COSTLY_POSTPROCESS`` says.
- ``DEMO_WORKERS``: default for ``--workers`` (concurrent predictions; more queue).
- ``PYROMETER_REQUESTS_ADDR=HOST:PORT``: wrap the app in Pyrometer's WSGI middleware,
  which sends one record per request to the agent listening there.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

# Concurrency comes from the worker threads, each running one request. BLAS threads
# inside each small matmul would only fight those workers for the same cores, so they
# are off unless the environment asks for them (before numpy is first imported).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from server_app import ModelServerApp, ServerConfig

log = logging.getLogger("model-server")
DRAIN_GRACE_S = 5.0


class DemoConfigError(Exception):
    """A bad flag or environment value; main() prints it and exits 2."""


def _env_bool(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise DemoConfigError(f"{key}={raw!r}: use 1 or 0")


def _positive_int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise DemoConfigError(f"{what}={text!r}: expected a whole number") from None
    if value < 1:
        raise DemoConfigError(f"{what}={value}: must be at least 1")
    return value


def parse_config(argv: Sequence[str] | None, env: Mapping[str, str]) -> ServerConfig:
    """Flags over environment over defaults."""
    parser = argparse.ArgumentParser(description="Pyrometer demo model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--workers", help="concurrent predictions (env DEMO_WORKERS, default 4)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the model weights")
    parser.add_argument("--max-tokens", default="512", help="longer inputs are truncated")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise DemoConfigError(f"--port {args.port}: must be 0..65535")
    workers = args.workers if args.workers is not None else env.get("DEMO_WORKERS", "4")
    slow = frozenset(v.strip() for v in env.get("DEMO_SLOW_VERSIONS", "").split(",") if v.strip())
    return ServerConfig(
        host=args.host,
        port=args.port,
        workers=_positive_int(workers, "workers"),
        version=env.get("APP_VERSION", "").strip() or "dev",
        slow_versions=slow,
        slow_forward=_env_bool(env, "DEMO_SLOW_FORWARD"),
        costly_postprocess=_env_bool(env, "DEMO_COSTLY_POSTPROCESS"),
        slowdown_file=env.get("DEMO_SLOWDOWN_FILE") or None,
        flags_file=env.get("DEMO_FLAGS_FILE") or None,
        seed=args.seed,
        max_tokens=_positive_int(args.max_tokens, "--max-tokens"),
    )


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per connection; the app's semaphore bounds the actual work."""

    daemon_threads = True  # shutdown drains through the app, not by joining threads
    request_queue_size = 256  # open-loop load arrives in bursts; the default 5 drops them


class QuietHandler(WSGIRequestHandler):
    """No access log on stderr: at hundreds of requests a second it is only noise."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def _with_request_records(app: ModelServerApp) -> object:
    """Wrap the app in Pyrometer's WSGI middleware when PYROMETER_REQUESTS_ADDR is set.

    This is how a user's app reports each request's latency and sizes to the agent: a
    two-line change, and the middleware never blocks or raises into the app.
    """
    if not os.environ.get("PYROMETER_REQUESTS_ADDR"):
        return app
    from pyrometer.agent.middleware import PyrometerWSGIMiddleware

    return PyrometerWSGIMiddleware(app)


def serve(config: ServerConfig) -> int:
    """Bind, print the ready line, serve until SIGTERM/SIGINT, drain, return 0."""
    app = ModelServerApp(config)
    server = make_server(
        config.host, config.port, _with_request_records(app),
        server_class=ThreadingWSGIServer, handler_class=QuietHandler,
    )  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # serve_forever runs in a thread so that the main thread stays free for signals
    # and can call shutdown(), which would deadlock if called from serve_forever's thread.
    acceptor = threading.Thread(target=server.serve_forever, name="http-acceptor", daemon=True)
    acceptor.start()
    port = server.server_address[1]
    print(f"model-server listening on http://{config.host}:{port}", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    if not app.drain(DRAIN_GRACE_S):
        log.warning("stopping with predictions still in flight after %.0fs", DRAIN_GRACE_S)
    server.server_close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; the only place that decides the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = parse_config(argv, os.environ)
    except DemoConfigError as exc:
        print(f"model-server: {exc}", file=sys.stderr)
        return 2
    try:
        return serve(config)
    except OSError as exc:
        print(f"model-server: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
