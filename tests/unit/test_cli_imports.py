"""What the `pyrometer` entry point loads: the agent's parse must not pull in the
collector's command-line modules (agent/cli.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyrometer.agent import cli


@pytest.mark.parametrize(("argv", "command"), [
    (["agent", "--pid", "1"], "agent"),
    (["--log-level", "DEBUG", "agent", "--pid", "1"], "agent"),
    (["--log-level=DEBUG", "diff"], "diff"),
    (["-h"], None),
    (["--version"], None),
    (["--log-level"], None),
    (["no-such-command"], None),
    ([], None),
])
def test_the_subcommand_is_found_before_parsing(argv: list[str], command: str | None) -> None:
    assert cli._command(argv) == command


def test_parsing_the_agent_s_arguments_loads_no_collector_module() -> None:
    code = (
        "import sys\n"
        "from pyrometer.agent import cli\n"
        "argv = ['--log-level', 'INFO', 'agent', '--collector', '127.0.0.1:1', '--pid', '1']\n"
        "args = cli.build_parser(cli._command(argv)).parse_args(argv)\n"
        "assert args.command == 'agent'\n"
        "loaded = [m for m in sys.modules if m.startswith(('pyrometer.collector', 'http.client',\n"
        "          'email', 'duckdb', 'pyarrow', 'aiohttp'))]\n"
        "print(sorted(loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_query_command_still_gets_its_flags_and_the_others_are_listed() -> None:
    parser = cli.build_parser("flamegraph")
    args = parser.parse_args(["flamegraph", "--service", "svc"])
    assert args.service == "svc"
    assert "agent" in parser.format_help() and "collector" in parser.format_help()
