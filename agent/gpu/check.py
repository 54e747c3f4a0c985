"""`python -m pyrometer.agent.gpu.check [--seconds 20]`: check the NVML path on a real GPU.

Meant for a machine with an NVIDIA GPU and driver. It starts NVML the way the agent
does, runs a GPU load for the duration when `torch` with CUDA is importable (float16
matmuls on cuda:0 in a thread of this process, so this process's own GPU memory shows),
samples every GPU at 1 Hz through the agent's own sampler, prints each reading and a
summary per GPU, and exits 1 when it could read nothing. It only ever reads: it never
changes a clock, power limit or any other GPU setting.

`--record FILE` also writes every reading as a recording that `--gpu replay:FILE` plays
back (agent/gpu/replay.py), so a real device's episode can be replayed where there is no GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrometer.agent.shared.model import GpuReading

if TYPE_CHECKING:
    from pyrometer.agent.gpu.nvml import NvmlSource

GiB = 1024**3
_MEASURED = tuple(f.name for f in fields(GpuReading)
                  if f.name not in ("time_ns", "index", "uuid", "name", "replayed"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to sample (default 20)")
    parser.add_argument("--no-load", action="store_true", help="do not start a GPU load")
    parser.add_argument("--record", metavar="FILE", help="also write the readings as a replayable recording")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="  log: %(message)s")
    source = _open_nvml()
    if source is None:
        return 1
    load = _Load()
    print(load.start() if not args.no_load else "no GPU load (--no-load)", flush=True)
    try:
        readings = asyncio.run(_sample(source, max(0.1, args.seconds)))
    finally:
        load.stop()
    if args.record and readings:
        write_recording(Path(args.record), readings)
        print(f"recorded {len(readings)} readings to {args.record} (play them with --gpu replay:FILE)")
    return _summary(readings)


def write_recording(path: Path, readings: list[GpuReading]) -> None:
    """The readings as a recording for --gpu replay:FILE, t from the first reading."""
    from pyrometer.agent.gpu.replay import to_line

    start_ns = min(r.time_ns for r in readings)
    ordered = sorted(readings, key=lambda r: (r.time_ns, r.index))
    path.write_text("".join(to_line(r, start_ns) + "\n" for r in ordered), encoding="utf-8")


def _open_nvml() -> NvmlSource | None:
    try:
        from pyrometer.agent.gpu.nvml import NvmlSource
        from pyrometer.agent.gpu.sampler import why_no_nvml
    except ImportError as err:
        print(f"gpu-check: cannot import the NVML bindings ({err}); install nvidia-ml-py", file=sys.stderr)
        return None
    try:
        source = NvmlSource.open()
    except Exception as err:  # every failure to start means the same here: nothing to read
        print(f"gpu-check: {why_no_nvml(err)}; run it on a machine with an NVIDIA GPU", file=sys.stderr)
        return None
    print(f"NVML up: driver {_driver_version()}, {len(source.devices)} GPU(s)")
    for index, uuid, name in source.devices:
        print(f"  GPU {index}: {name} {uuid}")
    return source


def _driver_version() -> str:
    try:
        version = importlib.import_module("pynvml").nvmlSystemGetDriverVersion()
    except Exception:  # only shown for information
        return "unknown"
    return version.decode() if isinstance(version, bytes) else str(version)


async def _sample(source: NvmlSource, seconds: float) -> list[GpuReading]:
    from pyrometer.agent.gpu.sampler import GpuSampler

    readings: list[GpuReading] = []
    start_ns = time.time_ns()

    def show(reading: GpuReading) -> None:
        readings.append(reading)
        print(format_reading(reading, (reading.time_ns - start_ns) / 1e9), flush=True)

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    pid = os.getpid()
    await GpuSampler(source, 1.0).run(show, lambda: (pid,), stop)
    return readings


def format_reading(r: GpuReading, at_s: float) -> str:
    """One reading as one line of text; '?' where the device did not say."""
    from pyrometer.agent.shared.clock_events import decode_reasons

    def val(v: float | int | None, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
        return "?" if v is None else fmt.format(v / scale)

    reasons = "?" if r.clock_event_reasons is None else (
        ",".join(decode_reasons(r.clock_event_reasons)) or "none")
    return (f"{at_s:5.1f}s gpu{r.index} {val(r.temperature_c)}C (slowdown {val(r.slowdown_temperature_c)}C,"
            f" mem {val(r.memory_temperature_c)}C)  SM {val(r.sm_clock_mhz)}/{val(r.sm_clock_max_mhz)} MHz"
            f"  gfx {val(r.graphics_clock_mhz)}  mem {val(r.memory_clock_mhz)}/{val(r.memory_clock_max_mhz)}"
            f" MHz  power {val(r.power_mw, 1000)}/{val(r.power_limit_mw, 1000)} W"
            f"  mem {val(r.memory_used_bytes, GiB, '{:.1f}')}/{val(r.memory_total_bytes, GiB, '{:.1f}')} GiB"
            f"  util {val(r.utilization_gpu_pct)}%/{val(r.utilization_memory_pct)}%"
            f"  P{val(r.performance_state)}  own {val(r.process_memory_bytes, GiB, '{:.2f}')} GiB"
            f"  reasons {reasons}")


def _summary(readings: list[GpuReading]) -> int:
    from pyrometer.agent.shared.clock_events import decode_reasons

    measured = [r for r in readings if any(getattr(r, name) is not None for name in _MEASURED)]
    if not measured:
        print("gpu-check: read nothing from NVML: no reading had a single value", file=sys.stderr)
        return 1
    for index in sorted({r.index for r in measured}):
        mine = [r for r in measured if r.index == index]
        missing = [n for n in _MEASURED if all(getattr(r, n) is None for r in mine)]
        mask = 0
        for r in mine:
            mask |= r.clock_event_reasons or 0
        print(f"GPU {index}: {len(mine)} readings; temperature {_span(mine, 'temperature_c')} C;"
              f" SM clock {_span(mine, 'sm_clock_mhz')} MHz; power {_span(mine, 'power_mw', 1000)} W;"
              f" reasons seen: {', '.join(decode_reasons(mask)) or 'none'}")
        print(f"  not reported: {', '.join(missing) or 'nothing (every field read)'}")
    return 0


def _span(readings: list[GpuReading], name: str, scale: float = 1.0) -> str:
    values = [v / scale for v in (getattr(r, name) for r in readings) if v is not None]
    return f"{min(values):.0f}-{max(values):.0f}" if values else "?"


class _Load:
    """Float16 matmuls on cuda:0 in a daemon thread, when torch with CUDA is importable."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        try:
            torch = importlib.import_module("torch")
        except ImportError:
            return "torch is not installed: sampling without a GPU load"
        if not torch.cuda.is_available():
            return "torch sees no CUDA device: sampling without a GPU load"
        self._thread = threading.Thread(target=self._run, args=(torch,), name="gpu-load", daemon=True)
        self._thread.start()
        # cuda:0 is the first visible device: with CUDA_VISIBLE_DEVICES set, not NVML's GPU 0
        return f"GPU load: float16 matmuls on cuda:0 ({torch.cuda.get_device_name(0)})"

    def _run(self, torch: Any) -> None:
        try:
            a = torch.randn(8192, 8192, device="cuda:0", dtype=torch.float16)
            b = torch.randn(8192, 8192, device="cuda:0", dtype=torch.float16)
            c = torch.empty_like(a)
            while not self._stop.is_set():
                for _ in range(16):
                    torch.matmul(a, b, out=c)
                torch.cuda.synchronize()  # keeps the queue short, so stop() is quick
        except Exception as err:  # the check goes on without load
            print(f"GPU load stopped: {type(err).__name__}: {err}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
