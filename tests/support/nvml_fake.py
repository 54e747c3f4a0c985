"""A recorded-behaviour stand-in for the NVML C library, behind the real pynvml module.

Only pynvml's functions that would call into libnvidia-ml are replaced (every
``nvmlInit*``, ``nvmlShutdown``, ``nvmlSystem*`` and ``nvmlDevice*``); its constants,
structs and exception classes stay the real ones. Answers come from a recorded dict per
device, keyed by the call and its arguments after the handle. Errors are raised the
way pynvml raises them, through ``pynvml._nvmlCheckReturn(code)``, so each is the real
``NVMLError_*`` subclass. Like the real library, every call but ``nvmlInit`` fails
with Uninitialized before init or after shutdown, and a call the recording lacks is
NotSupported.
"""

from __future__ import annotations

import ctypes
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pynvml
import pytest

from pyrometer.agent.gpu import sampler as gpu_sampler

GiB = 1024**3
THERMAL = pynvml.nvmlClocksEventReasonSwThermalSlowdown | pynvml.nvmlClocksEventReasonHwThermalSlowdown


@dataclass(frozen=True)
class Fail:
    """A recorded NVML error code: the call raises it."""

    code: int


@dataclass(frozen=True)
class Handle:
    index: int


def field_values(field_id: int, value: int, code: int = pynvml.NVML_SUCCESS) -> Any:
    """What nvmlDeviceGetFieldValues returns: a ctypes array of the real struct."""
    values = (pynvml.c_nvmlFieldValue_t * 1)()
    values[0].fieldId = field_id
    values[0].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    values[0].nvmlReturn = code
    values[0].value.uiVal = value
    return values


def process(pid: int, used: int | None) -> Any:
    return pynvml.nvmlFriendlyObject({"pid": pid, "usedGpuMemory": used, "gpuInstanceId": 0xFFFFFFFF,
                                      "computeInstanceId": 0xFFFFFFFF})


def h200(uuid: str = "GPU-0000aaaa", *, pid: int = 4242) -> dict[Any, Any]:
    """An H200 under load, as the driver answers each call (keys: call, then args)."""
    return {
        "nvmlDeviceGetUUID": uuid,
        "nvmlDeviceGetName": "NVIDIA H200",
        ("nvmlDeviceGetTemperatureV", pynvml.NVML_TEMPERATURE_GPU): 83,
        ("nvmlDeviceGetTemperature", pynvml.NVML_TEMPERATURE_GPU): 83,
        ("nvmlDeviceGetTemperatureThreshold", pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN): 89,
        ("nvmlDeviceGetFieldValues", (pynvml.NVML_FI_DEV_MEMORY_TEMP,)):
            lambda: field_values(pynvml.NVML_FI_DEV_MEMORY_TEMP, 87),
        ("nvmlDeviceGetClockInfo", pynvml.NVML_CLOCK_SM): 1110,
        ("nvmlDeviceGetClockInfo", pynvml.NVML_CLOCK_GRAPHICS): 1110,
        ("nvmlDeviceGetClockInfo", pynvml.NVML_CLOCK_MEM): 2619,
        ("nvmlDeviceGetMaxClockInfo", pynvml.NVML_CLOCK_SM): 1980,
        ("nvmlDeviceGetMaxClockInfo", pynvml.NVML_CLOCK_MEM): 2619,
        "nvmlDeviceGetCurrentClocksEventReasons": THERMAL,
        "nvmlDeviceGetCurrentClocksThrottleReasons": THERMAL,
        "nvmlDeviceGetPowerUsage": 431_250,
        "nvmlDeviceGetEnforcedPowerLimit": 700_000,
        "nvmlDeviceGetMemoryInfo": pynvml.c_nvmlMemory_t(total=141 * GiB, free=67 * GiB, used=74 * GiB),
        "nvmlDeviceGetUtilizationRates": pynvml.c_nvmlUtilization_t(gpu=99, memory=35),
        "nvmlDeviceGetPerformanceState": pynvml.NVML_PSTATE_0,
        # the target (pid) and one of its workers, plus an unrelated process
        "nvmlDeviceGetComputeRunningProcesses":
            [process(pid, 70 * GiB), process(pid + 1, 2 * GiB), process(999, 5 * GiB)],
        "nvmlDeviceGetGraphicsRunningProcesses": [process(pid, 70 * GiB)],
    }


class FakeNvml:
    """The NVML library as recorded: `devices[i]` answers for GPU i; counts every call."""

    def __init__(self, devices: list[dict[Any, Any]], *, init_error: int | None = None) -> None:
        self.devices = devices
        self.init_error = init_error  # nvmlInit fails with this code while set
        self.broken: int | None = None  # every call fails with this code while set
        self.calls: Counter[str] = Counter()
        self.initialised = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
        # `--gpu auto` first looks for the driver's device; any existing path stands for it
        monkeypatch.setattr(gpu_sampler, "DRIVER_DEVICES", (os.devnull,))
        for name in dir(pynvml):
            if name.startswith(("nvmlInit", "nvmlShutdown", "nvmlSystem", "nvmlDevice")) \
                    and callable(getattr(pynvml, name)):
                monkeypatch.setattr(pynvml, name, self._entry(name))
        return self

    def _entry(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls[name] += 1
            return self._answer(name, args)
        return call

    def _answer(self, name: str, args: tuple[Any, ...]) -> Any:
        if name.startswith("nvmlInit"):
            return self._init()
        if not self.initialised:
            pynvml._nvmlCheckReturn(pynvml.NVML_ERROR_UNINITIALIZED)
        if self.broken is not None:
            pynvml._nvmlCheckReturn(self.broken)
        if name == "nvmlShutdown":
            self.initialised = False
            return None
        if name == "nvmlDeviceGetCount":
            return len(self.devices)
        if name == "nvmlDeviceGetHandleByIndex":
            return Handle(args[0])
        if name == "nvmlSystemGetDriverVersion":
            return "570.00"
        return self._device_answer(name, args[0], args[1:])

    def _init(self) -> None:
        if self.init_error is not None:
            pynvml._nvmlCheckReturn(self.init_error)
        self.initialised = True

    def _device_answer(self, name: str, handle: Handle, args: tuple[Any, ...]) -> Any:
        recorded = self.devices[handle.index]
        key = (name, *(tuple(a) if isinstance(a, list) else a for a in args)) if args else name
        answer = recorded.get(key, Fail(pynvml.NVML_ERROR_NOT_SUPPORTED))
        if isinstance(answer, Fail):
            pynvml._nvmlCheckReturn(answer.code)
        return answer() if callable(answer) else answer


def library_present() -> bool:
    """Whether this machine has the real NVML library (then the real checks can run)."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True
