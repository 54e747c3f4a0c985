"""`pyrometer agent`: wires target, sampler and shipper together and nothing else.

The agent is one asyncio program: the stack sampler yields windows, the shipper
delivers them. SIGTERM or SIGINT stops py-spy with SIGINT (so it writes its last
partial window), ships what is queued within a grace period, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import uuid
from importlib import metadata

from pyrometer.agent import config as agent_config
from pyrometer.agent import target as targets
from pyrometer.agent.config import AgentConfig
from pyrometer.agent.encoder import AgentIdentity
from pyrometer.agent.pyspy import SamplerConfig, StackSampler, TargetExited
from pyrometer.agent.shipper import Shipper, ShipperConfig

log = logging.getLogger("pyrometer.agent")
SHUTDOWN_GRACE_S = 5.0  # inside a Kubernetes pod's default 30 s termination grace


def main(args: argparse.Namespace) -> int:
    return asyncio.run(run(agent_config.resolve(args)))


async def run(config: AgentConfig) -> int:
    target = targets.resolve(config.pid, config.match)
    identity = AgentIdentity(
        agent_id=uuid.uuid4().hex, service=config.service, instance=config.instance,
        host=socket.gethostname(), target_pid=target.pid, labels=config.labels,
        agent_version=_version(),
    )
    shipper = Shipper(ShipperConfig(collector=config.collector), identity)
    sampler = StackSampler(_sampler_config(config), target.pid)
    _on_signals(sampler)
    shipping = asyncio.create_task(shipper.run(), name="shipper")
    try:
        await _sample(sampler, shipper, config, target)
    finally:
        await _drain(shipper, shipping)
    return 0


async def _sample(sampler: StackSampler, shipper: Shipper, config: AgentConfig,
                  target: targets.Target) -> None:
    print(f"pyrometer agent: profiling pid {target.pid} ({target.cmdline[:80]}) as service "
          f"{config.service!r}, shipping to {config.collector}", flush=True)
    try:
        async for window in sampler.windows():
            shipper.submit(window)
            # the achieved rate, not the asked one: py-spy falls behind on a busy host
            log.info("window %.1f s: %d samples, %.1f Hz achieved (%d Hz asked), %d queued",
                     window.duration_ns / 1e9, window.total, window.achieved_rate_hz,
                     config.rate_hz, shipper.pending)
    except TargetExited:
        log.warning("target pid %d exited; its last window is queued", target.pid)


async def _drain(shipper: Shipper, shipping: asyncio.Task[None]) -> None:
    await shipper.close()
    try:
        await asyncio.wait_for(shipping, SHUTDOWN_GRACE_S)
    except TimeoutError:
        log.error("collector unreachable at shutdown: %d windows not delivered", shipper.pending)
    stats = shipper.stats
    log.info("shipped %d batches (%d acked, %d duplicates, %d dropped)", stats.sent, stats.acked,
             stats.duplicates, stats.dropped_overflow + stats.rejected)


def _sampler_config(config: AgentConfig) -> SamplerConfig:
    return SamplerConfig(
        rate_hz=config.rate_hz, gil=config.gil, idle=config.idle, threads=config.threads,
        subprocesses=config.subprocesses, native=config.native, period_s=config.window_s,
        lead_s=min(1.0, config.window_s / 4),
    )


def _on_signals(sampler: StackSampler) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(sampler.stop()))


def _version() -> str:
    try:
        return metadata.version("pyrometer")
    except metadata.PackageNotFoundError:
        return "unknown"
