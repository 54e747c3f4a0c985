"""`pyrometer agent`: wires target, samplers and shipper together and nothing else.

The agent is one asyncio program. The stack loop follows the target across restarts
(re-finding it by --match) and ships one batch per profile window; the GPU, process
and request samplers run beside it and drop their records into a shared buffer that
rides along with the next batch, or with a telemetry-only batch every few seconds.
SIGTERM or SIGINT stops py-spy with SIGINT (so it writes its last partial window),
ships what is queued within a grace period, leaves what the collector did not take in
the spool for the next agent, and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from pyrometer.agent.config import AgentConfig
from pyrometer.agent.footprint import Losses, report_periodically
from pyrometer.agent.shared.errors import TargetError
from pyrometer.agent.shared.model import ProfileWindow
from pyrometer.agent.shared.version import VERSION
from pyrometer.agent.ship.buffer import TelemetryBuffer
from pyrometer.agent.ship.encoder import AgentIdentity
from pyrometer.agent.ship.shipper import Shipper, ShipperConfig
from pyrometer.agent.stacks.sampler import SamplerConfig, StackSampler, TargetExited
from pyrometer.agent.target import find as targets
from pyrometer.agent.target.lifecycle import Lifecycle, read_version, wait_for_target

if TYPE_CHECKING:
    from pyrometer.agent.host.sampler import ProcessSampler

log = logging.getLogger("pyrometer.agent")
SHUTDOWN_GRACE_S = 5.0  # inside a Kubernetes pod's default 30 s termination grace
REATTACH_RETRY_S = 0.5  # a successor may not have started its interpreter yet


def main(config: AgentConfig) -> int:
    """Runs the agent until SIGTERM or SIGINT (agent/start.py resolves `config`)."""
    return asyncio.run(run(config))


class Agent:
    """The running agent's shared state: what it profiles now, and how to stop it."""

    def __init__(self, config: AgentConfig, target: targets.Target) -> None:
        self.config = config
        self.target = target
        self.version = read_version(target.pid, config.version_keys, config.version)
        self.buffer = TelemetryBuffer()
        self.stop = asyncio.Event()
        self.sampler: StackSampler | None = None
        self.processes: ProcessSampler | None = None  # set when the samplers start
        self.restarts_before = 0  # py-spy restarts of samplers of earlier targets
        spool = Path(config.spool_dir) if config.spool_dir else None
        self.shipper = Shipper(ShipperConfig(
            collector=config.collector, spool_dir=spool, spool_max_bytes=config.spool_max_bytes,
            security=config.security,
        ), AgentIdentity(
            agent_id=uuid.uuid4().hex, service=config.service, instance=config.instance,
            host=socket.gethostname(), target_pid=target.pid, labels=config.labels,
            agent_version=VERSION,
        ))

    def target_pids(self) -> set[int]:
        """The target and its worker processes (GPU memory is per process).

        As the process sampler read them at its last tick, when that was of this target:
        listing them here instead scans every process on the host (1.5-2 ms of CPU on
        the event loop with 70 processes, more on a busy host) at every GPU reading. A
        worker started since then counts from the sampler's next listing, within
        RELIST_TICKS ticks.
        """
        tree = self.processes.tree if self.processes is not None else None
        if tree is not None and tree[0] is self.target:
            return set(tree[1])
        try:
            proc = psutil.Process(self.target.pid)
            return {self.target.pid, *(c.pid for c in proc.children(recursive=True))}
        except psutil.Error:
            return {self.target.pid}

    def losses(self) -> Losses:
        """Records the telemetry buffer dropped, and py-spy recorders replaced so far."""
        restarts = self.restarts_before + (self.sampler.restarts if self.sampler else 0)
        return Losses(sum(self.buffer.dropped.values()), restarts)

    def current_target(self) -> targets.Target:
        """The target followed now, also between its exit and a successor. Called from
        the process sampler's thread: it only reads `target`, which the loop replaces
        whole. The sampler reads no process of a target that has exited, nor one that
        reuses its pid (it compares the start time)."""
        return self.target

    def request_stop(self) -> None:
        self.stop.set()
        if self.sampler is not None:
            asyncio.ensure_future(self.sampler.stop())

    def ship(self, window: ProfileWindow | None = None) -> None:
        """Queue the window (if any) with all telemetry gathered since the last batch."""
        telemetry = self.buffer.take()
        if window is None and not telemetry:
            return
        # an unknown version ("") leaves the identity's --label version in place
        self.shipper.submit(window, telemetry, self.version or None)


async def run(config: AgentConfig) -> int:
    agent = Agent(config, targets.resolve(config.pid, config.match))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_stop)
    shipping = asyncio.create_task(agent.shipper.run(), name="shipper")
    async with contextlib.AsyncExitStack() as services:
        tasks = [asyncio.create_task(coro, name=name)
                 for name, coro in await _start_samplers(agent, services)]
        try:
            await _follow_target(agent)
        finally:
            agent.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    agent.ship()  # what the samplers gathered after the last window
    await _drain(agent.shipper, shipping)
    return 0


async def _start_samplers(agent: Agent, services: contextlib.AsyncExitStack
                          ) -> list[tuple[str, Coroutine[Any, Any, None]]]:
    """Start what runs beside the stack loop; returns the coroutines to run as tasks."""
    config, buffer = agent.config, agent.buffer
    jobs: list[tuple[str, Coroutine[Any, Any, None]]] = [
        ("flush", _flush_periodically(agent)),
        ("footprint", report_periodically(agent.shipper, agent.stop, buffer.add_agent_stats,
                                          agent.losses)),
    ]
    from pyrometer.agent.host.sampler import ProcessSampler

    agent.processes = ProcessSampler(config.process_interval_s)
    jobs.append(("process", agent.processes.run(
        agent.current_target, buffer.add_process, buffer.add_host, agent.stop)))
    if config.scrape is not None:
        from pyrometer.agent.engine.mapping import KNOWN, load_mapping
        from pyrometer.agent.engine.scraper import scrape_periodically

        rules = (*(load_mapping(config.scrape_mapping) if config.scrape_mapping else ()), *KNOWN)
        jobs.append(("engine", scrape_periodically(config.scrape, rules, config.scrape_interval_s,
                                                   buffer.add_engine, agent.stop)))
    gpu = _gpu_job(agent)
    if gpu is not None:
        jobs.append(("gpu", gpu))
    if config.requests_listen is not None:
        from pyrometer.agent.requests.listener import RequestListener

        listener = RequestListener(config.requests_listen)
        port = await listener.start(buffer.add_request)
        services.callback(listener.close)
        log.info("request records: listening on udp %s (port %d)", config.requests_listen, port)
    if config.proxy is not None:
        from pyrometer.agent.requests.proxy import ReverseProxy

        proxy = ReverseProxy(*config.proxy)
        port = await proxy.start(buffer.add_request)
        services.push_async_callback(proxy.close)
        print(f"pyrometer agent: proxy on port {port} -> {config.proxy[1]}", flush=True)
    return jobs


def _gpu_job(agent: Agent) -> Coroutine[Any, Any, None] | None:
    if agent.config.gpu == "off":
        return None
    from pyrometer.agent.gpu.sampler import GpuSampler, open_gpu_source

    source = open_gpu_source(agent.config.gpu, start_ns=time.time_ns())
    if source is None:
        return None
    sampler = GpuSampler(source, agent.config.gpu_interval_s)
    return sampler.run(agent.buffer.add_gpu, agent.target_pids, agent.stop)


async def _follow_target(agent: Agent) -> None:
    """Profile the target; when it exits, find its successor (--match) and go on."""
    lifecycle = Lifecycle()
    first = True
    while not agent.stop.is_set():
        target = agent.target
        agent.version = read_version(target.pid, agent.config.version_keys, agent.config.version)
        for event in lifecycle.observe(target, agent.version, time.time_ns()):
            log.info("%s: pid %d, version %r (was pid %d, %r)", event.kind, event.pid,
                     event.version, event.previous_pid, event.previous_version)
            agent.buffer.add_event(event)
        try:
            await _profile(agent, announce=first)
        except TargetError:
            if first:
                raise  # the target the user named cannot be profiled: say so and exit
            log.warning("cannot attach to pid %d yet; retrying", target.pid)
            await _pause(agent.stop, REATTACH_RETRY_S)
            if target.is_alive():
                continue
        first = False
        if agent.stop.is_set() or not await _next_target(agent):
            return


async def _profile(agent: Agent, announce: bool) -> None:
    config, target = agent.config, agent.target
    if agent.sampler is not None:
        agent.restarts_before += agent.sampler.restarts
    def say_profiling() -> None:
        print(f"pyrometer agent: profiling pid {target.pid} ({target.cmdline[:80]}) as service "
              f"{config.service!r}, shipping to {config.collector}", flush=True)

    # said once py-spy samples the target, not before the attach that may fail: the line
    # is true when it appears, and whatever waits for it (a supervisor's readiness check,
    # `make bench`'s start-up CPU) sees the start-up done
    agent.sampler = StackSampler(_sampler_config(config), target.pid,
                                 on_sampling=say_profiling if announce else None)
    if agent.stop.is_set():
        return
    try:
        async for window in agent.sampler.windows():
            # the achieved rate, not the asked one: py-spy falls behind on a busy host
            log.info("window %.1f s: %d samples, %.1f Hz achieved (%d Hz asked), version %r",
                     window.duration_ns / 1e9, window.total, window.achieved_rate_hz,
                     config.rate_hz, agent.version)
            agent.ship(window)
    except TargetExited:
        log.warning("target pid %d exited; its last window is queued", target.pid)


async def _next_target(agent: Agent) -> bool:
    if agent.config.match is None:
        log.warning("target pid %d is gone and --pid cannot follow a restart; use --match "
                    "to follow the service across restarts", agent.target.pid)
        return False
    successor = await wait_for_target(agent.config.match, agent.stop, exclude=agent.target)
    if successor is None:
        return False
    agent.target = successor
    return True


async def _flush_periodically(agent: Agent) -> None:
    """Telemetry-only batches between windows, so latency data is never 10 s stale."""
    while not agent.stop.is_set():
        await _pause(agent.stop, agent.config.flush_interval_s)
        if len(agent.buffer) and not agent.stop.is_set():
            agent.ship()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _drain(shipper: Shipper, shipping: asyncio.Task[None]) -> None:
    await shipper.close()
    try:
        # on time-out the shipper is cancelled, and writes what is left to the spool
        await asyncio.wait_for(shipping, SHUTDOWN_GRACE_S)
    except TimeoutError:
        log.error("collector too slow at shutdown: %d batches not delivered", shipper.pending)
    stats = shipper.stats
    log.info("shipped %d batches (%d acked, %d duplicates, %d dropped, %d spooled, %d left)",
             stats.sent, stats.acked, stats.duplicates, stats.dropped, stats.spooled,
             shipper.pending)


def _sampler_config(config: AgentConfig) -> SamplerConfig:
    return SamplerConfig(
        rate_hz=config.rate_hz, gil=config.gil, idle=config.idle, threads=config.threads,
        subprocesses=config.subprocesses, native=config.native, period_s=config.window_s,
        lead_s=min(1.0, config.window_s / 4),
    )
