"""Drive py-spy as a subprocess and turn its output into contiguous ProfileWindows.

A :class:`Recorder` supervises one ``py-spy record --format raw`` process through
explicit states (starting, sampling, stopping, exited). :class:`StackSampler` runs
recorders back to back on a wall-clock grid: ``lead_s`` before each grid boundary it
starts the next recorder, waits until that one is sampling (the *handover*), then
SIGINTs the previous one. Window k covers ``[handover_k, handover_k+1)`` on the agent's
clock, so windows never leave a gap. For the short time both recorders sample
(new one ready -> old one told to stop) the older window holds samples that the newer
one also has; they are removed from the older window as an estimate (raw output has
no timestamps): ``round(overlap_s * achieved_rate)`` samples, spread over its stacks by
largest remainder, see :func:`remove_samples`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import AgentError, ConfigError, TargetError
from .model import NANOS_PER_SECOND, ProfileWindow, SampleKey
from .pyspy_recorder import Recorder, RecorderResult, classify_failure

log = logging.getLogger(__name__)

Clock = Callable[[], int]


class SamplerError(AgentError):
    """py-spy itself is missing or unusable."""


class TargetExited(TargetError):
    """The target exited while it was being sampled (its last window was emitted)."""


@dataclass(frozen=True, slots=True)
class SamplerConfig:
    """How py-spy samples the target; validated once, at construction."""

    rate_hz: int = 100
    gil: bool = False  # only threads holding the GIL
    idle: bool = False  # include idle stacks (a wall-clock profile)
    threads: bool = False  # label samples with their thread
    subprocesses: bool = False  # also sample the target's child processes
    native: bool = False  # native frames too; py-spy then pauses the target to sample
    period_s: float = 10.0
    lead_s: float = 1.0  # start the next recorder this long before the grid boundary
    ready_timeout_s: float = 20.0
    stop_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if not 1 <= self.rate_hz <= 10_000:
            raise ConfigError(f"rate must be 1-10000 Hz, got {self.rate_hz}")
        if not 0 < self.lead_s < self.period_s:
            raise ConfigError(
                f"lead ({self.lead_s} s) must be positive and shorter than the period "
                f"({self.period_s} s)"
            )
        if self.ready_timeout_s <= 0 or self.stop_timeout_s <= 0:
            raise ConfigError("py-spy timeouts must be positive")

    def pyspy_flags(self) -> list[str]:
        """The ``py-spy record`` flags this config asks for (output and pid excluded)."""
        flags = ["--format", "raw", "--rate", str(self.rate_hz)]
        # py-spy cannot read native stacks without stopping the target
        flags += [] if self.native else ["--nonblocking"]
        for on, flag in (
            (self.gil, "--gil"),
            (self.idle, "--idle"),
            (self.threads, "--threads"),
            (self.subprocesses, "--subprocesses"),
            (self.native, "--native"),
        ):
            if on:
                flags.append(flag)
        return flags


def find_pyspy() -> str:
    """The py-spy binary: the one installed next to this Python first, then PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise SamplerError("py-spy not found: install it (pip install py-spy) or put it on PATH")
    return found


async def check_pyspy_version(pyspy: Sequence[str]) -> tuple[int, ...]:
    """Run ``py-spy --version`` and return the version; SamplerError if it is unusable."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *pyspy, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as exc:
        raise SamplerError(f"cannot run py-spy ({' '.join(pyspy)}): {exc}") from exc
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    text = out.decode(errors="replace").strip()
    words = text.split()
    try:
        version = tuple(int(p) for p in words[-1].split("."))
    except (IndexError, ValueError):
        version = ()
    if proc.returncode != 0 or words[:1] != ["py-spy"] or version < (0, 3):
        raise SamplerError(f"need py-spy 0.3 or later, `py-spy --version` said: {text!r}")
    return version


def remove_samples(counts: Mapping[SampleKey, int], n: int) -> dict[SampleKey, int]:
    """Remove ``n`` samples from ``counts`` in proportion to each stack's count.

    Largest remainder: every key loses the floor of its exact share, and the samples
    still owed come from the keys with the largest fractional parts (ties in the
    order of ``counts``), so the result is deterministic and no key goes negative.
    """
    total = sum(counts.values())
    n = max(0, min(n, total))
    if n == 0:
        return dict(counts)
    shares = {key: n * c / total for key, c in counts.items()}
    cut = {key: math.floor(s) for key, s in shares.items()}
    owed = n - sum(cut.values())
    order = sorted(counts, key=lambda k: cut[k] - shares[k])  # stable: ties keep order
    for key in order[:owed]:
        cut[key] += 1
    return {k: c - cut[k] for k, c in counts.items() if c - cut[k] > 0}


def overlap_samples(result: RecorderResult, next_ready_mono: float) -> int:
    """How many of ``result``'s samples were taken after the next recorder was ready."""
    sampled_s = result.stop_mono - result.ready_mono
    overlap_s = result.stop_mono - next_ready_mono
    if sampled_s <= 0 or overlap_s <= 0:
        return 0
    return round(overlap_s * result.total / sampled_s)
