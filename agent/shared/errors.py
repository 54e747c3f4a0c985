"""Pyrometer's exceptions and the exit codes they carry.

Every error meant for a user is a PyrometerError, and each class says which exit code it
ends the `pyrometer` command with: EXIT_USAGE (2) when the user must change something (a
flag, a variable, a file or address they named), EXIT_FAILURE (1) when something failed
at run time that a retry or an operator may fix. `main()` in agent/cli.py is the one
place that turns an error into an exit; nothing else calls sys.exit.

Each component has its own root: AgentError here, CollectorError in collector/errors.py.
ConfigError is neither's: the credential helpers in this package raise it for both.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class PyrometerError(Exception):
    """Root of every error reported to a user as one line (agent and collector alike)."""

    exit_code: ClassVar[int] = EXIT_FAILURE


class ConfigError(PyrometerError):
    """A flag or PYROMETER_* environment variable has a bad value (agent, collector, CLI)."""

    exit_code = EXIT_USAGE


class AgentError(PyrometerError):
    """Root of every error the agent reports to its user."""


class TargetError(AgentError):
    """The target process cannot be found, read or profiled."""

    exit_code = EXIT_USAGE  # a --pid or --match that names no process the agent can profile


class ShipError(AgentError):
    """The collector refused a batch for a reason retrying cannot fix."""
