"""Pyrometer's version: the one place it is written (pyproject.toml reads it from here).

A constant rather than importlib.metadata's lookup of the installed distribution: that
import alone (email, zipfile, csv and their kin) was 1.3 MiB of the agent's resident
memory, in a sidecar whose footprint is the point.
"""

VERSION = "0.1.0"
