"""The real NVML path end to end, on a machine with an NVIDIA GPU (`make gpu-check`).

Every other GPU test replays recorded readings; this one is the check that the agent's
NVML source, sampler and shipping give the collector what the device itself reports. It
starts a collector, a target that keeps the GPU busy with float16 matmuls when torch with
CUDA is importable (else a CPU loop), and the agent with `--gpu auto` on that target, then
checks what the collector stored: readings not marked replayed, values inside the device's
own limits, the target's own GPU memory found by its pid, and the load seen.

Without the NVML library or a GPU it skips and says why: CI has no GPU.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pyrometer.agent.shared.clock_events import CLOCK_EVENT_REASONS
from pyrometer.collector.procs import Child, python_env, start

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
DEADLINE_S = 120.0
MiB = 1024**2
# The target: a busy GPU when torch can reach one, so utilization and its own memory show.
TARGET = """
import sys
try:
    import torch
    cuda = torch.cuda.is_available()
except ImportError:
    cuda = False
if cuda:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    torch.matmul(a, b)
    torch.cuda.synchronize()
print("target ready cuda=" + str(cuda), flush=True)
while True:
    if cuda:
        for _ in range(8):
            torch.matmul(a, b)
        torch.cuda.synchronize()
    else:
        sum(range(100_000))
"""


def _gpu_count() -> int | str:
    """How many GPUs NVML sees, or why it cannot say."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as err:  # no library, no driver or no device: all mean no GPU here
        return f"no NVML here ({type(err).__name__}: {err})"
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


def _get(api: str, path: str, **params: str) -> Any:
    url = f"{api}{path}?{urllib.parse.urlencode({'service': 'real-gpu', **params})}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_the_agent_ships_what_the_real_gpu_reports(tmp_path: Path) -> None:
    count = _gpu_count()
    if isinstance(count, str) or count == 0:
        pytest.skip(f"needs an NVIDIA GPU: {count if isinstance(count, str) else 'NVML sees none'}")
    children: list[Child] = []
    db = tmp_path / "gpu.duckdb"
    try:
        collector = start("collector", CLI + ["collector", "--db", str(db), "--grpc-listen", "127.0.0.1:0",
                                              "--http-listen", "127.0.0.1:0"],
                          r"ingest on (?P<grpc>\S+) .*API on (?P<http>http://\S+)", tmp_path,
                          env=python_env())
        children.append(collector)
        target = start("target", [sys.executable, "-c", TARGET], r"target ready cuda=(?P<cuda>\w+)",
                       tmp_path, timeout=180, env=python_env())
        children.append(target)
        cuda = target.ready.group("cuda") == "True"
        agent = start("agent", CLI + ["agent", "--collector", collector.ready.group("grpc"),
                                      "--service", "real-gpu", "--pid", str(target.pid), "--window", "2",
                                      "--gpu", "auto", "--gpu-interval", "0.5"],
                      "profiling pid", tmp_path, env=python_env())
        children.append(agent)
        api = collector.ready.group("http")
        window = {"from": "now-10m", "to": "now+1m", "step": "1s"}
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:  # readiness: 20 one-second steps of readings stored
            gpus = _get(api, "/api/v1/gpu", **window)["gpus"]
            if gpus and min(len(g["points"]) for g in gpus) >= 20:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no 20 s of GPU readings in {DEADLINE_S:.0f} s: {agent.output()[-2000:]}")
        assert agent.stop(signal.SIGTERM, timeout=30) == 0, agent.output()
        answer = _get(api, "/api/v1/gpu", **window)
        collector.stop()
    finally:
        for child in reversed(children):
            child.stop(signal.SIGKILL)

    assert answer["replayed"] is False and "notice" not in answer
    assert len(answer["gpus"]) == count
    for gpu in answer["gpus"]:
        assert gpu["name"].startswith("NVIDIA") and gpu["uuid"].startswith("GPU-")
        points = gpu["points"]
        assert not any(p["replayed"] for p in points)
        for p in points:
            assert 0 < p["sm_clock_mhz"] <= p["sm_clock_max_mhz"]
            assert 0 < p["memory_used_bytes"] <= p["memory_total_bytes"]
            assert 0 < p["temperature_c"] < 120
            limit = p["power_limit_w"]
            assert p["power_w"] > 0 and (limit is None or p["power_w"] < 1.5 * limit)
            assert set(p["throttle"] or {}) <= set(CLOCK_EVENT_REASONS)
    # the target's own GPU memory, found by its pid among the device's processes
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        (own_max,) = con.execute("SELECT max(process_memory_bytes) FROM gpu WHERE NOT replayed").fetchone()
    if cuda:  # two 128 MiB operands, a result and the CUDA context at least
        assert own_max is not None and own_max >= 384 * MiB
        busiest = max(p["utilization_gpu_pct"] for g in answer["gpus"] for p in g["points"])
        assert busiest > 50, "the matmul load did not show in the utilization"
    else:
        assert own_max == 0
