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
import os
import sys
from collections.abc import Mapping, Sequence

import serving
from serving import DemoConfigError, QuietHandler, ThreadingWSGIServer, env_bool, positive_int

# Concurrency comes from the worker threads, each running one request. BLAS threads
# inside each small matmul would only fight those workers for the same cores, so they
# are off unless the environment asks for them (before numpy is first imported).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from server_app import ModelServerApp, ServerConfig  # noqa: E402  (after the BLAS settings)

__all__ = ["DemoConfigError", "QuietHandler", "ThreadingWSGIServer", "main", "parse_config", "serve"]


def parse_config(argv: Sequence[str] | None, env: Mapping[str, str]) -> ServerConfig:
    """Flags over environment over defaults."""
    parser = argparse.ArgumentParser(description="Pyrometer demo model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--workers", help="concurrent predictions (env DEMO_WORKERS, default 4)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the model weights")
    parser.add_argument("--max-tokens", default="512", help="longer inputs are truncated")
    args = parser.parse_args(argv)
    serving.check_port(args.port)
    workers = args.workers if args.workers is not None else env.get("DEMO_WORKERS", "4")
    slow = frozenset(v.strip() for v in env.get("DEMO_SLOW_VERSIONS", "").split(",") if v.strip())
    return ServerConfig(
        host=args.host,
        port=args.port,
        workers=positive_int(workers, "workers"),
        version=env.get("APP_VERSION", "").strip() or "dev",
        slow_versions=slow,
        slow_forward=env_bool(env, "DEMO_SLOW_FORWARD"),
        costly_postprocess=env_bool(env, "DEMO_COSTLY_POSTPROCESS"),
        slowdown_file=env.get("DEMO_SLOWDOWN_FILE") or None,
        flags_file=env.get("DEMO_FLAGS_FILE") or None,
        seed=args.seed,
        max_tokens=positive_int(args.max_tokens, "--max-tokens"),
    )


def serve(config: ServerConfig) -> int:
    """Bind, print the ready line, serve until SIGTERM/SIGINT, drain, return 0."""
    return serving.serve("model-server", ModelServerApp(config), config.host, config.port)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; the only place that decides the exit code."""
    return serving.run("model-server", lambda: parse_config(argv, os.environ), serve)


if __name__ == "__main__":
    sys.exit(main())
