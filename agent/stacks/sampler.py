"""Drive py-spy as a subprocess and turn its output into contiguous ProfileWindows.

A :class:`Recorder` supervises one ``py-spy record --format raw`` process through
explicit states (starting, sampling, stopping, exited). :class:`StackSampler` runs
recorders back to back on a wall-clock grid: ``lead_s`` before each grid boundary it
starts the next recorder, waits until that one is sampling (the *handover*), then
SIGINTs the previous one. Window k covers ``[handover_k, handover_k+1)`` on the agent's
clock, so windows never leave a gap. For the short time both recorders sample
(new one ready -> old one reports it stopped) the older window holds samples the newer
one also has; they are removed from the older window as an estimate (raw output has
no timestamps): ``round(overlap_s * achieved_rate)`` samples, spread over its stacks by
largest remainder, see :func:`remove_samples`. That is an expectation, and so is
any one window's count: py-spy spaces its samples at random (exponential) intervals
to avoid aliasing, so a window of N samples scatters by about sqrt(N); totals over
many windows converge on rate x time.

Supervision: a py-spy that dies mid-window, or never says it is sampling within
``ready_timeout_s``, is killed and restarted with backoff (``2**n * uniform(0.8, 1.2)``
times ``restart_backoff_s``, capped at ``restart_backoff_max_s``; n counts the failures
since the last full window); its samples are lost and the next window starts when the
new recorder is ready. One that ignores SIGINT at a handover for ``stop_timeout_s``
(hung) is killed; the next recorder is already sampling, so windows go on. py-spy is
never started through a shell, and never outlives the agent (orphans.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from pyrometer.agent.shared.errors import AgentError, ConfigError, TargetError
from pyrometer.agent.shared.model import NANOS_PER_SECOND, ProfileWindow, SampleKey
from pyrometer.agent.stacks.orphans import reap_orphans, with_parent_death_signal, workdir_prefix
from pyrometer.agent.stacks.recorder import Recorder, RecorderResult, classify_failure

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
    full_filenames: bool = False  # py-spy shortens paths to the package part by default
    period_s: float = 10.0
    lead_s: float = 1.0  # start the next recorder this long before the grid boundary
    ready_timeout_s: float = 20.0
    stop_timeout_s: float = 10.0  # py-spy answers SIGINT within one sample period
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.rate_hz <= 10_000:
            raise ConfigError(f"rate must be 1-10000 Hz, got {self.rate_hz}")
        if not 0 < self.lead_s < self.period_s:
            raise ConfigError(
                f"lead ({self.lead_s} s) must be positive and shorter than the period "
                f"({self.period_s} s)"
            )
        if min(self.ready_timeout_s, self.stop_timeout_s, self.restart_backoff_s) <= 0:
            raise ConfigError("py-spy timeouts and backoff must be positive")

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
            (self.full_filenames, "--full-filenames"),
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


@dataclass(frozen=True, slots=True)
class Handover:
    """One switch from an old recorder to a new one, as measured."""

    overlap_s: float  # new recorder ready -> old one reported it stopped sampling
    removed: int  # samples taken out of the older window for that overlap
    old_total: int  # what the old recorder had recorded before the removal


class StackSampler:
    """Samples one process with py-spy, in contiguous windows on a wall-clock grid.

    ``pyspy`` is the command that runs py-spy (default: :func:`find_pyspy`); tests
    and deployments may put a wrapper in front of the binary. ``clock`` stamps windows.
    """

    def __init__(
        self,
        config: SamplerConfig,
        pid: int,
        *,
        clock: Clock = time.time_ns,
        pyspy: Sequence[str] | None = None,
        on_sampling: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.pid = pid
        self.clock = clock
        self.pyspy = list(pyspy) if pyspy else None
        # called once, when the first recorder samples: all that windows() does before
        # its first window (py-spy's version, the sweep for orphans, an attach) is done
        self.on_sampling = on_sampling
        self.version: tuple[int, ...] = ()
        self.last_handover: Handover | None = None
        self.workdir: Path | None = None  # py-spy's files while windows() runs
        self.restarts = 0  # recorders replaced after a crash or hang, all told
        self._failures = 0  # consecutive, since the last full window
        self._stop = asyncio.Event()
        self._live: set[Recorder] = set()

    async def stop(self) -> None:
        """Ask windows() to finish and return at once.

        windows() then SIGINTs the running recorder, yields the final partial window
        (ending when py-spy reports it stopped sampling, normally within one sample
        period) and ends. Safe to call more than once, before windows() starts, and
        from inside the ``async for`` body. A sampler runs once: it cannot restart.
        """
        self._stop.set()

    async def windows(self) -> AsyncIterator[ProfileWindow]:
        """Yield one ProfileWindow per grid period until stop() (or the target exits).

        Raises TargetError (clear one-line message) when the first recorder cannot
        attach, and TargetExited, after the last window, when the target exits.
        """
        pyspy = self.pyspy or with_parent_death_signal([find_pyspy()])
        self.version = await check_pyspy_version(pyspy)
        if self.config.native:
            log.warning("native stacks: py-spy pauses process %d for every sample", self.pid)
        await asyncio.to_thread(reap_orphans)
        workdir = self.workdir = Path(tempfile.mkdtemp(prefix=workdir_prefix()))
        try:
            current = await self._launch(pyspy, workdir, first=True)
            assert current is not None
            start_ns = current.ready_ns
            if self.on_sampling is not None:
                self.on_sampling()
            while True:
                await self._wait_until_launch_time(current)
                if self._stop.is_set() or current.exited.done():
                    result = await self._finish(current)
                    # a Ctrl-C at a terminal reaches py-spy (same process group) too: the
                    # agent is being stopped, and py-spy has written its file
                    stopping = self._stop.is_set() or result.interrupted
                    if stopping or self._target_gone(result):
                        yield self._window(start_ns, result.stop_ns, result.counts, result)
                        if not stopping:
                            raise TargetExited(f"process {self.pid} exited")
                        return
                    self._recorder_died(result)
                    replacement = await self._relaunch(pyspy, workdir)
                    if replacement is None:
                        return  # stop() during the backoff: nothing was sampled since
                    current, start_ns = replacement, replacement.ready_ns
                    continue
                nxt = await self._launch(pyspy, workdir, first=False)
                if nxt is None:
                    log.warning("keeping the current py-spy recorder; next try at the next "
                                "window")
                    continue
                result = await self._finish(current)
                counts = self._trim(result, nxt.ready_mono)
                yield self._window(start_ns, nxt.ready_ns, counts, result)
                current, start_ns = nxt, nxt.ready_ns
                self._failures = 0
        finally:
            for recorder in list(self._live):
                await recorder.kill()
            shutil.rmtree(workdir, ignore_errors=True)

    async def _launch(self, pyspy: list[str], workdir: Path, *, first: bool) -> Recorder | None:
        """Start a recorder and wait until it samples; on failure raise (first) or log."""
        path = workdir / f"{time.monotonic_ns()}.raw"
        recorder = Recorder(pyspy, self.config.pyspy_flags(), self.pid, path, self.clock)
        self._live.add(recorder)
        try:
            ready = await recorder.start(self.config.ready_timeout_s)
        except OSError as exc:
            self._live.discard(recorder)
            raise SamplerError(f"cannot run py-spy ({' '.join(pyspy)}): {exc}") from exc
        if ready:
            return recorder
        await recorder.kill()
        self._live.discard(recorder)
        error = classify_failure(recorder.output, self.pid)
        if first:
            raise error
        log.warning("py-spy recorder failed to start: %s", error)
        return None

    async def _relaunch(self, pyspy: list[str], workdir: Path) -> Recorder | None:
        """A new recorder after one died, with backoff; None if stop() came first.

        Raises TargetExited when the target is gone in the meantime.
        """
        cfg = self.config
        while not self._stop.is_set():
            if not psutil.pid_exists(self.pid):
                raise TargetExited(f"process {self.pid} exited")
            delay = min(cfg.restart_backoff_max_s, cfg.restart_backoff_s * 2**self._failures)
            delay *= random.uniform(0.8, 1.2)
            self._failures += 1
            self.restarts += 1
            log.warning("restarting py-spy in %.1f s (failure %d in a row)", delay, self._failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                break
            recorder = await self._launch(pyspy, workdir, first=False)
            if recorder is not None:
                return recorder
        return None

    async def _finish(self, recorder: Recorder) -> RecorderResult:
        result = await recorder.stop(self.config.stop_timeout_s)
        self._live.discard(recorder)
        with contextlib.suppress(OSError):
            recorder.path.unlink()
        if result.malformed:
            log.warning(
                "skipped %d py-spy lines this parser could not read, first: %.200r",
                result.malformed,
                result.first_malformed,
            )
        return result

    async def _wait_until_launch_time(self, current: Recorder) -> None:
        """Sleep until lead_s before the next grid boundary, stop(), or py-spy exiting."""
        period_ns = round(self.config.period_s * NANOS_PER_SECOND)
        lead_ns = round(self.config.lead_s * NANOS_PER_SECOND)
        now = self.clock()
        launch_at = (now // period_ns + 1) * period_ns - lead_ns
        while launch_at - now < period_ns // 2:  # no runt windows after a late handover
            launch_at += period_ns
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait(
            {stop, current.exited},
            timeout=(launch_at - now) / NANOS_PER_SECOND,
            return_when=asyncio.FIRST_COMPLETED,
        )
        stop.cancel()

    def _trim(self, result: RecorderResult, next_ready_mono: float) -> dict[SampleKey, int]:
        removed = overlap_samples(result, next_ready_mono)
        overlap_s = result.stop_mono - next_ready_mono
        self.last_handover = Handover(overlap_s, removed, result.total)
        log.debug(
            "handover: %.3f s overlap, %d of %d samples removed", overlap_s, removed, result.total
        )
        return remove_samples(result.counts, removed)

    def _target_gone(self, result: RecorderResult) -> bool:
        return result.target_exited or not psutil.pid_exists(self.pid)

    @staticmethod
    def _recorder_died(result: RecorderResult) -> None:
        """Say why a py-spy exited on its own mid-window; its samples are lost."""
        tail = " | ".join([line for line in result.output if line.strip()][-3:]) or "no output"
        log.warning("py-spy exited unexpectedly (code %s): %s", result.returncode, tail)

    def _window(
        self, start_ns: int, end_ns: int, counts: dict[SampleKey, int], result: RecorderResult
    ) -> ProfileWindow:
        return ProfileWindow(
            start_ns=start_ns,
            end_ns=end_ns,
            rate_hz=float(self.config.rate_hz),
            counts=counts,
            idle_included=self.config.idle,
            gil_only=self.config.gil,
            native=self.config.native,
            errors=result.errors,
        )
