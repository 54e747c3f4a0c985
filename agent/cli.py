"""The `pyrometer` command: one entry point, subcommands imported only when run.

`pyrometer agent` must never import DuckDB, pyarrow or aiohttp (the agent image does not
have them), so each subcommand names its handler as "module:function" and the module
is imported after the arguments are parsed. Argument definitions live in light modules.
Exit codes are decided here and nowhere else: 0 ok, 1 runtime failure, 2 user error
(each error class carries its own, see agent/shared/errors.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from pyrometer.agent.shared.errors import EXIT_USAGE, PyrometerError

# subcommand -> (help, "module:function" adding its flags, handler "module:function")
COMMANDS: dict[str, tuple[str, str, str]] = {
    "agent": ("profile a Python process and stream to a collector",
              "pyrometer.agent.config:add_arguments", "pyrometer.agent.run:main"),
    "collector": ("receive, store and serve profiles",
                  "pyrometer.collector.config:add_arguments", "pyrometer.collector.service:main"),
    "flamegraph": ("fetch a flame graph for a time window",
                   "pyrometer.collector.api.client:add_flamegraph_arguments",
                   "pyrometer.collector.api.client:flamegraph_main"),
    "spikes": ("find latency spikes in a window and rank their causes",
               "pyrometer.collector.api.client:add_spikes_arguments",
               "pyrometer.collector.api.client:spikes_main"),
    "event": ("record a deploy or config change (for CI/CD)",
              "pyrometer.collector.api.client:add_event_arguments",
              "pyrometer.collector.api.client:event_main"),
    "demo": ("run collector, demo model server, agent and load for a minute",
             "pyrometer.collector.demo:add_arguments", "pyrometer.collector.demo:main"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyrometer", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, flags, _) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        _function(flags)(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = _function(COMMANDS[args.command][2])(args)
        return code
    except PyrometerError as err:
        print(f"pyrometer {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in {"duckdb", "pyarrow", "aiohttp", "prometheus_client"}:
            print(f"pyrometer {args.command}: needs the collector extra "
                  f"(pip install 'pyrometer[collector]'): {err.name} is missing", file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        return 130


def _function(spec: str) -> Callable[..., Any]:
    """"module:function", imported now (only the light flag modules load at parse time)."""
    module_name, _, func = spec.partition(":")
    return getattr(importlib.import_module(module_name), func)  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
