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
from pyrometer.agent.shared.version import VERSION

# subcommand -> (help, "module:function" adding its flags, handler "module:function")
_CLI = "pyrometer.collector.cli"
COMMANDS: dict[str, tuple[str, str, str]] = {
    "agent": ("profile a Python process and stream to a collector",
              "pyrometer.agent.config:add_arguments", "pyrometer.agent.start:main"),
    "collector": ("receive, store and serve profiles",
                  "pyrometer.collector.config:add_arguments", "pyrometer.collector.service:main"),
    "services": ("list the services that have profile data",
                 f"{_CLI}.flame:add_services_arguments", f"{_CLI}.flame:services_main"),
    "flamegraph": ("the top functions of a time window, or its flame graph in a file",
                   f"{_CLI}.flame:add_flamegraph_arguments", f"{_CLI}.flame:flamegraph_main"),
    "diff": ("what changed between a baseline window and a target window",
             f"{_CLI}.diff:add_diff_arguments", f"{_CLI}.diff:diff_main"),
    "latency": ("request latency, rate, errors and sizes by step",
                f"{_CLI}.series:add_latency_arguments", f"{_CLI}.series:latency_main"),
    "gpu": ("GPU temperature, clocks, power, memory and throttling by step",
            f"{_CLI}.series:add_telemetry_arguments", f"{_CLI}.series:gpu_main"),
    "process": ("the target process's and its host's CPU, memory and pressure by step",
                f"{_CLI}.series:add_telemetry_arguments", f"{_CLI}.series:process_main"),
    "events": ("list deploys, restarts and config changes in a window",
               f"{_CLI}.events:add_events_arguments", f"{_CLI}.events:events_main"),
    "spikes": ("find latency spikes in a window and rank their causes",
               f"{_CLI}.events:add_spikes_arguments", f"{_CLI}.events:spikes_main"),
    "stages": ("a window's time per request by pipeline stage (tokenization, forward pass...)",
               f"{_CLI}.insight:add_stages_arguments", f"{_CLI}.insight:stages_main"),
    "requests": ("the slowest requests of a window, with their trace ids",
                 f"{_CLI}.insight:add_requests_arguments", f"{_CLI}.insight:requests_main"),
    "cost": ("per version: latency and busy GPU-seconds per 1000 requests",
             f"{_CLI}.insight:add_cost_arguments", f"{_CLI}.insight:cost_main"),
    "slos": ("latency objectives: state, error budget left, burn rates",
             f"{_CLI}.insight:add_slos_arguments", f"{_CLI}.insight:slos_main"),
    "event": ("record a deploy or config change (for CI/CD)",
              f"{_CLI}.events:add_event_arguments", f"{_CLI}.events:event_main"),
    "demo": ("run collector, demo model server, agent and load for a minute",
             "pyrometer.collector.demo:add_arguments", "pyrometer.collector.demo:main"),
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, unless there is none to show or the
    help already says it (ArgumentDefaultsHelpFormatter would print "default: None")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (default in (None, False, [], "", argparse.SUPPRESS) or "default" in text
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"




def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; given `command`, only that subcommand gets its flags.

    The flag modules of the query subcommands import the API client and its http.client
    and email: a running agent would carry them (about 2.5 MiB) for nothing.
    """
    parser = argparse.ArgumentParser(prog="pyrometer", description=__doc__.splitlines()[0],
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"pyrometer {VERSION}")
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS,
                        help="how much the command logs to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, flags, _) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text,
                             formatter_class=_HelpFormatter)
        if command is None or command == name:
            _function(flags)(cmd)
        # after the subcommand too; SUPPRESS leaves the value given before it in place
        cmd.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS,
                         help="how much the command logs to stderr (default: INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(_command(sys.argv[1:] if argv is None else argv)).parse_args(argv)
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


def _command(argv: list[str]) -> str | None:
    """The subcommand `argv` runs, or None where that is unclear (then every subcommand
    gets its flags, and argparse says what is wrong)."""
    tokens = iter(argv)
    for token in tokens:
        if token == "--log-level":
            next(tokens, None)
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
        elif not token.startswith("--log-level="):
            return None
    return None


def _function(spec: str) -> Callable[..., Any]:
    """"module:function", imported now (only the light flag modules load at parse time)."""
    module_name, _, func = spec.partition(":")
    return getattr(importlib.import_module(module_name), func)  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
