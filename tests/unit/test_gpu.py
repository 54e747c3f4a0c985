"""NvmlSource and the sampler against a recorded NVML (tests/nvml_fake.py) that raises
pynvml's own error classes; `open_gpu_source('auto')` without NVML; gpu-check."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from pyrometer.agent.gpu.nvml import NvmlSource
from pyrometer.agent.gpu.queries import GpuUnavailable
from pyrometer.agent.gpu.sampler import GpuSampler, open_gpu_source
from pyrometer.agent.shared.clock_events import decode_reasons
from pyrometer.agent.shared.model import GpuReading
from support.nvml_fake import Fail, FakeNvml, GiB, field_values, h200, library_present, process

S = 1_700_000_000 * 10**9  # the agent's start
SEC = 10**9
TARGET = 4242


# --- NVML, against a recorded driver ---------------------------------------------------------

def test_nvml_reading_from_a_recorded_h200(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([h200("GPU-a"), h200("GPU-b")]).install(monkeypatch)
    source = open_gpu_source("auto", start_ns=S)
    assert isinstance(source, NvmlSource)
    for k in range(3):
        readings = source.read(S + k * SEC, (TARGET, TARGET + 1))
    assert [(r.index, r.uuid, r.time_ns) for r in readings] == [(0, "GPU-a", S + 2 * SEC),
                                                                 (1, "GPU-b", S + 2 * SEC)]
    r = readings[0]
    assert (r.temperature_c, r.slowdown_temperature_c, r.memory_temperature_c) == (83.0, 89.0, 87.0)
    assert (r.sm_clock_mhz, r.sm_clock_max_mhz, r.graphics_clock_mhz) == (1110, 1980, 1110)
    assert (r.memory_clock_mhz, r.memory_clock_max_mhz) == (2619, 2619)
    assert decode_reasons(r.clock_event_reasons or 0) == ("SwThermalSlowdown", "HwThermalSlowdown")
    assert (r.power_mw, r.power_limit_mw) == (431_250, 700_000)
    assert (r.memory_used_bytes, r.memory_total_bytes) == (74 * GiB, 141 * GiB)
    assert (r.utilization_gpu_pct, r.utilization_memory_pct, r.performance_state) == (99, 35, 0)
    assert r.process_memory_bytes == 72 * GiB  # target + worker, the target counted once
    assert not r.replayed
    # handles cached: one lookup per device, one init, whatever the number of reads
    assert fake.calls["nvmlDeviceGetHandleByIndex"] == 2 and fake.calls["nvmlInit"] == 1
    assert fake.calls["nvmlDeviceGetTemperature"] == 0  # the deprecated call is not used
    source.close()
    assert not fake.initialised


def test_process_memory_is_zero_when_the_target_uses_no_gpu_and_none_when_unknown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    device = h200()
    FakeNvml([device]).install(monkeypatch)
    source = NvmlSource.open()
    assert source.read(S, (1,))[0].process_memory_bytes == 0
    assert source.read(S, ())[0].process_memory_bytes is None  # no target known
    device["nvmlDeviceGetComputeRunningProcesses"] = [process(TARGET, None)]  # e.g. Windows WDDM
    device["nvmlDeviceGetGraphicsRunningProcesses"] = Fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
    assert source.read(S, (TARGET,))[0].process_memory_bytes is None


def test_unsupported_query_is_logged_once_then_not_asked(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    device = h200()
    device["nvmlDeviceGetEnforcedPowerLimit"] = Fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
    device[("nvmlDeviceGetFieldValues", (pynvml.NVML_FI_DEV_MEMORY_TEMP,))] = lambda: field_values(
        pynvml.NVML_FI_DEV_MEMORY_TEMP, 0, pynvml.NVML_ERROR_NOT_SUPPORTED)
    device["nvmlDeviceGetPerformanceState"] = Fail(pynvml.NVML_ERROR_NO_PERMISSION)
    fake = FakeNvml([device]).install(monkeypatch)
    source = NvmlSource.open()
    with caplog.at_level(logging.INFO, logger="pyrometer.agent"):
        readings = [source.read(S + k, (TARGET,))[0] for k in range(4)]
    lines = [rec.getMessage() for rec in caplog.records if "not supported" in rec.getMessage()]
    assert len(lines) == 3 and any("power limit" in line and "Not Supported" in line for line in lines)
    assert fake.calls["nvmlDeviceGetEnforcedPowerLimit"] == 1
    assert fake.calls["nvmlDeviceGetFieldValues"] == 1
    assert all(r.power_limit_mw is None and r.memory_temperature_c is None for r in readings)
    assert all(r.power_mw == 431_250 for r in readings)  # the rest goes on


def test_old_driver_falls_back_to_the_older_calls_silently(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    device = h200()
    device[("nvmlDeviceGetTemperatureV", pynvml.NVML_TEMPERATURE_GPU)] = Fail(
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    device["nvmlDeviceGetCurrentClocksEventReasons"] = Fail(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    fake = FakeNvml([device]).install(monkeypatch)
    source = NvmlSource.open()
    with caplog.at_level(logging.INFO, logger="pyrometer.agent"):
        readings = [source.read(S + k, ())[0] for k in range(3)]
    assert all(r.temperature_c == 83.0 and r.clock_event_reasons == 0x60 for r in readings)
    assert fake.calls["nvmlDeviceGetTemperatureV"] == 1 and fake.calls["nvmlDeviceGetTemperature"] == 3
    assert fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 3
    assert not [rec for rec in caplog.records if "not supported" in rec.getMessage()]


def test_transient_error_leaves_the_field_empty_and_is_rate_limited(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    device = h200()
    good = device["nvmlDeviceGetUtilizationRates"]
    device["nvmlDeviceGetUtilizationRates"] = Fail(pynvml.NVML_ERROR_UNKNOWN)
    FakeNvml([device]).install(monkeypatch)
    source = NvmlSource.open()
    with caplog.at_level(logging.WARNING, logger="pyrometer.agent"):
        bad = [source.read(S + k, ())[0] for k in range(3)]
    assert all(r.utilization_gpu_pct is None and r.temperature_c == 83.0 for r in bad)
    failures = [rec for rec in caplog.records if "utilization failed: Unknown Error" in rec.getMessage()]
    assert len(failures) == 1
    device["nvmlDeviceGetUtilizationRates"] = good
    assert source.read(S + 3, ())[0].utilization_gpu_pct == 99  # still asked: it was not unsupported


@pytest.mark.parametrize(("code", "needle"), [
    (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "NVML library (libnvidia-ml.so.1) was not found"),
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "the NVIDIA driver is not loaded"),
    (pynvml.NVML_ERROR_UNKNOWN, "NVML failed to start: Unknown Error"),
])
def test_auto_without_nvml_is_one_clear_line_and_no_source(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture,
                                                           code: int, needle: str) -> None:
    FakeNvml([h200()], init_error=code).install(monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="pyrometer.agent"):
        assert open_gpu_source("auto", start_ns=S) is None
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING
    message = caplog.records[0].getMessage()
    assert message.startswith("GPU telemetry off: ") and needle in message


def test_auto_with_no_gpu_says_so_and_shuts_nvml_down(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNvml([]).install(monkeypatch)
    with caplog.at_level(logging.INFO, logger="pyrometer.agent"):
        assert open_gpu_source("auto", start_ns=S) is None
    assert [rec.getMessage() for rec in caplog.records] == ["GPU telemetry off: NVML found no GPU"]
    assert not fake.initialised


def test_driver_going_away_mid_run_recovers_by_initialising_again(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([h200()]).install(monkeypatch)
    source = NvmlSource.open()
    assert source.read(S, ())
    fake.broken = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    with pytest.raises(GpuUnavailable, match="NVML stopped answering"):
        source.read(S + 1, ())
    fake.broken, fake.init_error = None, pynvml.NVML_ERROR_DRIVER_NOT_LOADED  # driver reloading
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        source.read(S + 2, ())
    fake.init_error = None
    assert [r.temperature_c for r in source.read(S + 3, ())] == [83.0]
    assert fake.calls["nvmlInit"] == 3 and fake.calls["nvmlDeviceGetHandleByIndex"] == 2


def test_lost_gpu_drops_out_and_all_lost_restarts_nvml(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    first, second = h200("GPU-a"), h200("GPU-b")
    fake = FakeNvml([first, second]).install(monkeypatch)
    source = NvmlSource.open()
    second["nvmlDeviceGetPowerUsage"] = Fail(pynvml.NVML_ERROR_GPU_IS_LOST)
    with caplog.at_level(logging.ERROR, logger="pyrometer.agent"):
        assert [r.uuid for r in source.read(S, ())] == ["GPU-a"]
        assert [r.uuid for r in source.read(S + 1, ())] == ["GPU-a"]
    assert len([rec for rec in caplog.records if "GPU 1 (GPU-b) is lost" in rec.getMessage()]) == 1
    first["nvmlDeviceGetPowerUsage"] = Fail(pynvml.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(GpuUnavailable, match="every GPU is lost"):
        source.read(S + 2, ())
    del first["nvmlDeviceGetPowerUsage"], second["nvmlDeviceGetPowerUsage"]  # after a reset
    assert [r.uuid for r in source.read(S + 3, ())] == ["GPU-a", "GPU-b"]
    assert fake.calls["nvmlInit"] == 2


def test_sampler_backs_off_and_recovers_when_nvml_fails_mid_run(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNvml([h200()]).install(monkeypatch)
    source = NvmlSource.open()
    fake.broken = pynvml.NVML_ERROR_GPU_IS_LOST

    async def scenario() -> list[GpuReading]:
        got: list[GpuReading] = []
        stop = asyncio.Event()

        def emit(reading: GpuReading) -> None:
            got.append(reading)
            stop.set()

        def pids() -> tuple[int, ...]:
            if fake.calls["nvmlInit"] >= 3:  # the driver is back on the third start
                fake.broken = None
            return (TARGET,)

        sampler = GpuSampler(source, 0.1, backoff_initial_s=0.01, backoff_max_s=0.02)
        await asyncio.wait_for(sampler.run(emit, pids, stop), 10)
        return got

    with caplog.at_level(logging.INFO, logger="pyrometer.agent"):
        got = asyncio.run(scenario())
    assert got[0].process_memory_bytes == 70 * GiB
    assert any("GPU readings resumed" in rec.getMessage() for rec in caplog.records)
    assert not fake.initialised  # run() closed the source on the way out


def test_sampler_survives_a_failing_source_and_a_failing_consumer() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.reads = 0
            self.closed = False

        def read(self, now_ns: int, target_pids: object) -> list[GpuReading]:
            self.reads += 1
            if self.reads == 1:
                raise RuntimeError("driver hiccup")
            return [GpuReading(time_ns=now_ns, index=0)]

        def close(self) -> None:
            self.closed = True

    source = Flaky()

    async def scenario() -> None:
        stop = asyncio.Event()

        def emit(reading: GpuReading) -> None:
            if source.reads >= 3:
                stop.set()
            raise ValueError("consumer bug")

        await asyncio.wait_for(GpuSampler(source, 0.1, backoff_initial_s=0.01).run(emit, tuple, stop), 10)

    asyncio.run(scenario())
    assert source.reads >= 3 and source.closed


# --- gpu-check ----------------------------------------------------------------------------------

def test_gpu_check_exits_nonzero_with_a_clear_message_without_nvml() -> None:
    proc = subprocess.run([sys.executable, "-m", "pyrometer.agent.gpu.check", "--seconds", "1", "--no-load"],
                          capture_output=True, text=True, timeout=120)
    if library_present():  # a machine with a GPU: the check must read it
        assert proc.returncode == 0, proc.stderr
        assert "readings" in proc.stdout
    else:
        assert proc.returncode == 1
        assert "gpu-check: the NVML library (libnvidia-ml.so.1) was not found" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_gpu_check_prints_what_a_recorded_gpu_answers(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from pyrometer.agent.gpu import check as gpu_check

    device = h200("GPU-a")
    device["nvmlDeviceGetEnforcedPowerLimit"] = Fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
    fake = FakeNvml([device]).install(monkeypatch)
    assert gpu_check.main(["--seconds", "0.2", "--no-load"]) == 0
    out = capsys.readouterr().out
    assert "NVML up: driver 570.00, 1 GPU(s)" in out and "GPU 0: NVIDIA H200 GPU-a" in out
    assert "83C (slowdown 89C, mem 87C)  SM 1110/1980 MHz" in out
    assert "power 431/? W" in out and "reasons SwThermalSlowdown,HwThermalSlowdown" in out
    assert "own 0.00 GiB" in out  # its own pid uses no GPU memory here
    assert "not reported: power_limit_mw\n" in out
    assert not fake.initialised and not any(n.startswith("nvmlDeviceSet") for n in fake.calls)


def test_gpu_check_records_what_the_replay_plays_back_unchanged(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    # `--record FILE` is how a real device's episode becomes a `--gpu replay:FILE` recording:
    # every field the device reported comes back as it was read, only marked replayed
    from pyrometer.agent.gpu import check as gpu_check
    from pyrometer.agent.gpu.replay import load_recording

    device = h200("GPU-a")
    device["nvmlDeviceGetEnforcedPowerLimit"] = Fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
    FakeNvml([device, h200("GPU-b")]).install(monkeypatch)
    source = NvmlSource.open()
    read = [r for k in range(3) for r in source.read(S + k * SEC + k * 1_234_567, (TARGET,))]
    source.close()
    path = tmp_path / "episode.jsonl"
    gpu_check.write_recording(path, list(reversed(read)))  # written in time order whatever came in
    rows = load_recording(path)
    # t to the millisecond: 1.001234567 s is written 1.001
    assert [t for t, _ in rows] == [k * (SEC + 1_000_000) for k in range(3) for _ in range(2)]
    assert [dataclasses.replace(r, replayed=False, time_ns=0) for _, r in rows] == [
        dataclasses.replace(r, time_ns=0) for r in read]
    assert all(r.replayed for _, r in rows)
    # what GPU 0 did not report is left out of its lines, not written as 0
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [("power_limit_mw" in line) for line in lines] == [False, True] * 3


def test_auto_without_the_driver_device_says_so_and_never_loads_nvml(tmp_path: Path) -> None:
    # in a fresh interpreter: pynvml must not even be imported (it costs the agent ~4 MiB)
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
        "from pyrometer.agent.gpu import sampler\n"
        f"sampler.DRIVER_DEVICES = ({str(tmp_path / 'nvidiactl')!r}, {str(tmp_path / 'dxg')!r})\n"
        "assert sampler.open_gpu_source('auto', start_ns=0) is None\n"
        "print('pynvml imported:', 'pynvml' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"GPU telemetry off: the NVIDIA driver is not loaded "
        f"(no {tmp_path / 'nvidiactl'} or {tmp_path / 'dxg'})",
        "pynvml imported: False",
    ]
