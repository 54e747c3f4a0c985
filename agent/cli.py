"""The `pyrometer` command: one entry point, subcommands imported only when run.

`pyrometer agent` must never import DuckDB, pyarrow or aiohttp (the agent image does not
have them), so each subcommand names its handler as "module:function" and the module
is imported after the arguments are parsed. Argument definitions live in light modules.
Exit codes are decided here and nowhere else: 0 ok, 1 runtime failure, 2 user error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from pyrometer.agent import config as agent_config
from pyrometer.agent.errors import PyrometerError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# subcommand -> (help, module that defines its flags, handler "module:function")
COMMANDS: dict[str, tuple[str, str, str]] = {
    "agent": ("profile a Python process and stream to a collector",
              "pyrometer.agent.config", "pyrometer.agent.run:main"),
    "collector": ("receive, store and serve profiles",
                  "pyrometer.collector.config", "pyrometer.collector.service:main"),
    "flamegraph": ("fetch a flame graph for a time window",
                   "pyrometer.collector.client", "pyrometer.collector.client:flamegraph_main"),
    "demo": ("run collector, demo model server, agent and load for a minute",
             "pyrometer.collector.demo", "pyrometer.collector.demo:main"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyrometer", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, flags_module, _) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module = agent_config if flags_module == agent_config.__name__ else _import(flags_module)
        module.add_arguments(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _handler(COMMANDS[args.command][2])(args)
    except PyrometerError as err:
        print(f"pyrometer {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in {"duckdb", "pyarrow", "aiohttp", "prometheus_client"}:
            print(f"pyrometer {args.command}: needs the collector extra "
                  f"(pip install 'pyrometer[collector]'): {err.name} is missing", file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        return 130


def _handler(spec: str) -> Callable[[argparse.Namespace], int]:
    module_name, _, func = spec.partition(":")
    return getattr(_import(module_name), func)  # type: ignore[no-any-return]


def _import(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(name)


if __name__ == "__main__":
    sys.exit(main())
