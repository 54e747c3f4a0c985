"""What the `pyrometer` entry point loads: the agent's parse must not pull in the
collector's command-line modules (agent/cli.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyrometer.agent import cli, start
from pyrometer.agent.config import AgentConfig


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
    assert _fresh(code) == ["[]"]


def test_a_query_command_still_gets_its_flags_and_the_others_are_listed() -> None:
    parser = cli.build_parser("flamegraph")
    args = parser.parse_args(["flamegraph", "--service", "svc"])
    assert args.service == "svc"
    assert "agent" in parser.format_help() and "collector" in parser.format_help()


def _agent_config(*flags: str) -> AgentConfig:
    argv = ["agent", "--collector", "127.0.0.1:7070", "--service", "svc", "--pid", "1", *flags]
    return start.resolve(cli.build_parser("agent").parse_args(argv), env={})


def test_only_an_agent_that_scrapes_needs_python_s_ssl() -> None:
    assert not start.needs_python_ssl(_agent_config())
    assert not start.needs_python_ssl(_agent_config("--tls", "--gpu", "off"))
    assert start.needs_python_ssl(_agent_config("--scrape", "https://127.0.0.1:8000/metrics"))
    assert start.needs_python_ssl(_agent_config("--scrape", "http://127.0.0.1:8000/metrics"))
    assert start.needs_python_ssl(_agent_config("--proxy", "127.0.0.1:8080=https://model:8443"))


def test_an_ssl_module_already_loaded_stays() -> None:
    import ssl

    start.without_python_ssl()  # pytest loaded ssl long before: nothing changes
    assert sys.modules["ssl"] is ssl


def test_without_ssl_every_module_the_agent_runs_still_imports() -> None:
    """In a fresh interpreter, as `pyrometer agent` starts without --scrape: resolving the
    flags loads no ssl, and neither does anything the running agent imports (asyncio,
    grpc and its aio API, the samplers, the shipper); `import ssl` then fails cleanly."""
    code = (
        "import sys\n"
        "from pyrometer.agent import cli, start\n"
        "argv = ['agent', '--collector', '127.0.0.1:1', '--service', 's', '--pid', '1']\n"
        "config = start.resolve(cli.build_parser('agent').parse_args(argv))\n"
        "assert 'ssl' not in sys.modules, 'resolving the flags loaded ssl'\n"
        "start.without_python_ssl()\n"
        "import asyncio, grpc, grpc.aio\n"
        "from pyrometer.agent import run\n"
        "from pyrometer.agent.gpu import sampler, replay\n"
        "from pyrometer.agent.host import sampler\n"
        "from pyrometer.agent.requests import probe\n"
        "from pyrometer.agent.ship import channel, shipper\n"
        "try:\n"
        "    import ssl\n"
        "except ImportError:\n"
        "    print('no ssl')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('_ssl', '_hashlib'))))\n"
    )
    assert _fresh(code) == ["no ssl", "[]"]


def _fresh(code: str) -> list[str]:
    """The lines `code` prints in a fresh interpreter, which must exit 0."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()
