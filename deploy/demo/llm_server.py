"""Pyrometer's streamed-token demo server: an LLM-shaped endpoint over a simulated
continuous-batching engine, with vLLM's metrics.

Run it by path, like model_server.py (it is not part of the installed distribution)::

    python deploy/demo/llm_server.py --host 127.0.0.1 --port 0

Once it accepts connections it prints exactly one line to stdout,
``llm-server listening on http://HOST:PORT``, and serves until SIGTERM or SIGINT.

Endpoints: ``POST /v1/generate`` with ``{"prompt": str, "max_tokens"?: int (default 16)}``
answers ``application/x-ndjson``, one line ``{"index", "text"}`` per token as the engine
produces it, then ``{"finish_reason", "prompt_tokens", "generated_tokens", "preemptions"}``
(finish reason ``length``, or ``error`` for a prompt that cannot fit the whole KV cache).
Tokens are whitespace-separated words, the prompt's and the generated ones alike. A bad
body gets 400 and changes nothing. ``GET /metrics``: a Prometheus exposition under vLLM's
names and types (llm_metrics.py). ``GET /v1/info``: limits, live engine counts.
``GET /healthz``.

The engine (llm_engine.py) simulates vLLM's scheduler: a FIFO queue, a running batch of
at most ``max_num_seqs``, a KV cache of ``kv_blocks`` blocks of 16 tokens, preemption by
recompute. One step costs 0.3 ms of simulated device time per prefilled token, 0.5 ms per
sequence in the batch and 7.5 ms fixed, plus about 0.3 ms of real CPU.

The defaults, for the load the root-cause evaluation sends (20 requests/s, Poisson;
prompts of 32 words on average, lognormal; 24 generated tokens each):

- prefill takes 20 x 32 x 0.3 ms = 192 ms of every second, leaving f = 0.81 for decode
  steps of 7.8 ms + 0.5 ms per running sequence; Little's law with 480 tokens/s to make
  gives a batch of B = 480 x 7.8 ms / (0.81 - 480 x 0.5 ms) = 6.6 sequences on average
  (bursts reach about 20), each streaming for about B / 20 = 0.33 s: the default
  ``max_num_seqs`` of 64 leaves the batch far from its limit;
- a sequence holds ceil((32 + up to 24) / 16), about 3 blocks: 6.6 x 3 = 20 of the default
  1024 ``kv_blocks`` (2%, bursts under 10%): the cache is far from full.

Switches, read from the environment at startup:

- ``DEMO_FLAGS_FILE=PATH``: runtime limits, ``max_num_seqs=N`` and ``kv_blocks=N`` lines
  (N at least 1; other names ignored), re-read at most once a second, so a limit can
  change without a restart. A missing file, or one with a bad value, means the defaults.
  Cut ``max_num_seqs`` below the batch the load needs and requests queue with the work per
  request unchanged; cut ``kv_blocks`` below what the batch holds (as if another model took
  the GPU's memory) and the cache runs full and sequences are preempted and recomputed.
- ``APP_VERSION``: reported by ``/v1/info`` (default ``dev``).
- ``PYROMETER_REQUESTS_ADDR=HOST:PORT``: wrap the app in Pyrometer's WSGI middleware,
  which sends one record per request to the agent listening there, with the prompt's
  token count as the request's size (``record_size``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import serving
from llm_app import LlmApp, LlmConfig
from serving import positive_int


def parse_config(argv: Sequence[str] | None, env: Mapping[str, str]) -> LlmConfig:
    """Flags over environment over defaults."""
    parser = argparse.ArgumentParser(description="Pyrometer streamed-token demo server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--max-num-seqs", default="64", help="running batch limit (default 64)")
    parser.add_argument("--kv-blocks", default="1024", help="KV-cache blocks of 16 tokens "
                        "(default 1024)")
    parser.add_argument("--seed", help="ignored: a tag on the command line, for --match")
    args = parser.parse_args(argv)
    serving.check_port(args.port)
    return LlmConfig(host=args.host, port=args.port,
                     max_num_seqs=positive_int(args.max_num_seqs, "--max-num-seqs"),
                     kv_blocks=positive_int(args.kv_blocks, "--kv-blocks"),
                     flags_file=env.get("DEMO_FLAGS_FILE") or None,
                     version=env.get("APP_VERSION", "").strip() or "dev")


def serve(config: LlmConfig) -> int:
    """Bind, print the ready line, serve until SIGTERM/SIGINT, drain, return 0."""
    return serving.serve("llm-server", LlmApp(config), config.host, config.port)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; the only place that decides the exit code."""
    return serving.run("llm-server", lambda: parse_config(argv, os.environ), serve)


if __name__ == "__main__":
    sys.exit(main())
