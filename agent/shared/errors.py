"""The agent's exceptions: one root, so main() can map any of them to a one-line exit.

PyrometerError is also the base of the collector's root error, so the single `main()`
of the `pyrometer` command treats every component's user errors alike.
"""

from __future__ import annotations


class PyrometerError(Exception):
    """Root of every error reported to a user as one line (agent and collector alike)."""


class AgentError(PyrometerError):
    """Root of every error the agent reports to its user."""


class TargetError(AgentError):
    """The target process cannot be found, read or profiled."""


class ConfigError(AgentError):
    """A flag or PYROMETER_* environment variable has a bad value."""


class ShipError(AgentError):
    """The collector refused a batch for a reason retrying cannot fix."""
