"""One ``py-spy record`` process, supervised through explicit states.

STARTING (spawned, not yet attached) -> SAMPLING (py-spy printed its "Sampling
process" line) -> STOPPING (SIGINT sent: py-spy writes its file) -> EXITED. py-spy may
also go straight to EXITED on its own: it failed to attach, the target exited, or it
crashed. Its stdout and stderr are drained all along so it never blocks on a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pyrometer.agent.shared.errors import AgentError, TargetError
from pyrometer.agent.shared.model import SampleKey
from pyrometer.agent.stacks.parser import RawParser, aggregate

log = logging.getLogger(__name__)

READY_MARK = "py-spy> Sampling process"
_SUMMARY = re.compile(r"Samples: (\d+) Errors: (\d+)")
_STOPPED = re.compile(r"Stopped sampling because (.*)")
TARGET_EXITED_REASON = "process exited"
INTERRUPTED_REASON = "Control-C pressed"


class RecorderState(enum.Enum):
    STARTING = "starting"
    SAMPLING = "sampling"
    STOPPING = "stopping"
    EXITED = "exited"


@dataclass(frozen=True, slots=True)
class RecorderResult:
    """What one recorder sampled from ready_mono until stop_mono (monotonic seconds)."""

    counts: dict[SampleKey, int]
    errors: int
    ready_mono: float
    stop_mono: float
    stop_ns: int  # agent clock at stop_mono
    returncode: int | None
    stop_reason: str  # py-spy's words, e.g. "Control-C pressed" or "process exited"
    malformed: int = 0
    first_malformed: str = ""
    output: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def target_exited(self) -> bool:
        return self.stop_reason == TARGET_EXITED_REASON

    @property
    def interrupted(self) -> bool:
        """py-spy stopped on a SIGINT (ours, or one sent to the whole process group)."""
        return self.stop_reason == INTERRUPTED_REASON


def _process_name(pid: int) -> str:
    try:
        return str(psutil.Process(pid).name())
    except psutil.Error:
        return "?"


def classify_failure(output: str, pid: int) -> AgentError:
    """Map why py-spy could not attach to ``pid`` (its stdout+stderr) to one clear line."""
    lowered = output.lower()
    if "permission denied" in lowered or "operation not permitted" in lowered:
        return TargetError(
            f"no permission to read process {pid}: py-spy needs ptrace. Run the agent as "
            "root, or grant SYS_PTRACE (docker run --cap-add SYS_PTRACE; Kubernetes "
            'securityContext.capabilities.add: ["SYS_PTRACE"]), or relax '
            "kernel.yama.ptrace_scope"
        )
    if "failed to find python version" in lowered:
        return TargetError(
            f"process {pid} ({_process_name(pid)}) is not a Python process py-spy can read"
        )
    if not psutil.pid_exists(pid) or "no such file or directory" in lowered:
        return TargetError(f"no process with pid {pid}")
    first = next((ln for ln in output.splitlines() if ln.strip()), "no output")
    return TargetError(f"py-spy could not sample process {pid}: {first.strip()}")


class Recorder:
    """One py-spy process recording ``pid`` into ``path``.

    ``argv_prefix`` is how py-spy is run (its binary, possibly behind a wrapper);
    ``flags`` come from SamplerConfig.pyspy_flags().
    """

    def __init__(
        self,
        argv_prefix: Sequence[str],
        flags: Sequence[str],
        pid: int,
        path: Path,
        clock: Callable[[], int],
    ) -> None:
        self.argv = [*argv_prefix, "record", *flags, "-o", str(path), "--pid", str(pid)]
        self.pid = pid
        self.path = path
        self.clock = clock
        self.state = RecorderState.STARTING
        self.ready_mono = 0.0
        self.ready_ns = 0
        self.exit_mono = 0.0
        self.exit_ns = 0
        self.stopped_mono = 0.0
        self.stopped_ns = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._output: deque[str] = deque(maxlen=200)
        self._drains: list[asyncio.Task[None]] = []
        self._exited: asyncio.Task[int] | None = None

    async def start(self, timeout_s: float) -> bool:
        """Spawn py-spy and wait until it samples (True) or exits first (False)."""
        env = dict(os.environ, RUST_BACKTRACE="0")  # one-line errors, no backtraces
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._drains = [
            asyncio.create_task(self._drain(self._proc.stdout)),
            asyncio.create_task(self._drain(self._proc.stderr)),
        ]
        self._exited = asyncio.create_task(self._wait_exit())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait(
            {ready, self._exited}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        if self._ready.is_set():
            return True
        if not self._exited.done():
            log.warning("py-spy did not start sampling within %.0f s; killing it", timeout_s)
            await self.kill()
        return False

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            self._output.append(line)
            if line.startswith(READY_MARK) and not self._ready.is_set():
                self.ready_mono = time.monotonic()
                self.ready_ns = self.clock()
                self.state = RecorderState.SAMPLING
                self._ready.set()
            elif _STOPPED.search(line) and not self.stopped_mono:
                # the moment sampling ended, closer than SIGINT (py-spy checks for
                # Ctrl-C once per sample) and than its exit (it writes its file first)
                self.stopped_mono, self.stopped_ns = time.monotonic(), self.clock()

    async def _wait_exit(self) -> int:
        assert self._proc is not None
        code = await self._proc.wait()
        self.exit_mono, self.exit_ns = time.monotonic(), self.clock()
        await asyncio.gather(*self._drains)  # the pipes close when py-spy exits
        self.state = RecorderState.EXITED
        return code

    @property
    def exited(self) -> asyncio.Task[int]:
        """Done once py-spy has exited and its output was read."""
        assert self._exited is not None
        return self._exited

    @property
    def output(self) -> str:
        return "\n".join(self._output)

    async def stop(self, timeout_s: float) -> RecorderResult:
        """SIGINT py-spy (if still running), wait for it and read what it recorded."""
        assert self._proc is not None
        if self.exited.done():  # it stopped on its own (target exited, or it crashed)
            stop_mono, stop_ns = self.exit_mono, self.exit_ns
        else:
            stop_mono, stop_ns = time.monotonic(), self.clock()
            self.state = RecorderState.STOPPING
            self._proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), timeout_s)
            except TimeoutError:
                log.warning("py-spy ignored SIGINT for %.0f s; killing it", timeout_s)
                await self.kill()
        if self.stopped_mono:
            stop_mono, stop_ns = self.stopped_mono, self.stopped_ns
        return await asyncio.to_thread(self._result, stop_mono, stop_ns)

    def _result(self, stop_mono: float, stop_ns: int) -> RecorderResult:
        lines = tuple(self._output)
        reason = next((m[1] for ln in lines if (m := _STOPPED.search(ln))), "")
        errors = next((int(m[2]) for ln in lines if (m := _SUMMARY.search(ln))), 0)
        parser = RawParser(target_pid=self.pid)
        try:
            counts = aggregate(parser.parse_text(self.path.read_text(errors="replace")))
        except FileNotFoundError:
            counts = {}
        return RecorderResult(
            counts,
            errors,
            self.ready_mono,
            stop_mono,
            stop_ns,
            self._proc.returncode if self._proc else None,
            reason,
            parser.malformed,
            parser.first_malformed,
            lines,
        )

    async def kill(self) -> None:
        """SIGKILL py-spy and wait for it; what it sampled is lost."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        if self._exited is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._exited
        self.state = RecorderState.EXITED
