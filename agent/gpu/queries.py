"""The NVML queries a GPU reading is made of, and how their errors are classed.

Each query asks NVML one thing of one device handle and returns GpuReading fields. A
query with a newer and an older API lists both, newest first (temperature, clock-event
reasons): the source falls back to the older one when the driver or the installed
`pynvml` lacks the newer. Every NVML id (sensors, clocks, thresholds, field ids) comes
from the module's named constants, never a number: the numbers differ between NVML
releases. A constant or wrapper the installed `pynvml` lacks counts as NotSupported.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py ships no type hints

from pyrometer.agent.shared.errors import AgentError

Fields = dict[str, Any]
Query = Callable[[Any, Collection[int]], Fields]  # (device handle, target pids) -> fields
Errors = tuple[type[Exception], ...]


class GpuUnavailable(AgentError):
    """NVML cannot be used now (no library, no driver, no GPU, or the driver went away)."""


class NotInBindings(Exception):
    """The installed pynvml has no wrapper for this call: treated like NotSupported."""


def _errors(*names: str) -> Errors:
    # by name, so that an older pynvml without one of these classes still imports
    return tuple(getattr(pynvml, n) for n in names if hasattr(pynvml, n))


# The device or driver will never answer this query: ask once, then stop asking.
UNSUPPORTED: Errors = (NotInBindings, *_errors(
    "NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_NoPermission",
    "NVMLError_InvalidArgument", "NVMLError_ArgumentVersionMismatch", "NVMLError_Deprecated"))
# This GPU fell off the bus or needs a reset: its handle is useless until NVML restarts.
DEVICE_LOST: Errors = _errors("NVMLError_GpuIsLost", "NVMLError_ResetRequired", "NVMLError_GpuNotFound")
# NVML as a whole is gone: every handle is invalid.
DRIVER_GONE: Errors = _errors("NVMLError_Uninitialized", "NVMLError_DriverNotLoaded",
                              "NVMLError_LibRmVersionMismatch", "NVMLError_LibraryNotFound")
# Errors that are not about one query: the caller deals with them.
FATAL: Errors = DEVICE_LOST + DRIVER_GONE


def _call(name: str, *args: Any) -> Any:
    fn = getattr(pynvml, name, None)
    if fn is None:
        raise NotInBindings(f"pynvml has no {name}")
    return fn(*args)


def _const(name: str) -> Any:
    value = getattr(pynvml, name, None)
    if value is None:
        raise NotInBindings(f"pynvml has no {name}")
    return value


def _temperature_v(handle: Any, _: Collection[int]) -> Fields:
    value = _call("nvmlDeviceGetTemperatureV", handle, _const("NVML_TEMPERATURE_GPU"))
    # the wrapper returns the degrees; some releases hand back the nvmlTemperature_t struct
    return {"temperature_c": float(getattr(value, "temperature", value))}


def _temperature_legacy(handle: Any, _: Collection[int]) -> Fields:
    return {"temperature_c": float(_call("nvmlDeviceGetTemperature", handle, _const("NVML_TEMPERATURE_GPU")))}


def _slowdown_threshold(handle: Any, _: Collection[int]) -> Fields:
    value = _call("nvmlDeviceGetTemperatureThreshold", handle,
                  _const("NVML_TEMPERATURE_THRESHOLD_SLOWDOWN"))
    return {"slowdown_temperature_c": float(value)}


def _memory_temperature(handle: Any, _: Collection[int]) -> Fields:
    (value,) = _call("nvmlDeviceGetFieldValues", handle, [_const("NVML_FI_DEV_MEMORY_TEMP")])
    if value.nvmlReturn != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(value.nvmlReturn)  # NVMLError picks the subclass for the code
    return {"memory_temperature_c": float(_field_value(value))}


def _field_value(value: Any) -> float:
    members = {"NVML_VALUE_TYPE_DOUBLE": "dVal", "NVML_VALUE_TYPE_UNSIGNED_INT": "uiVal",
               "NVML_VALUE_TYPE_UNSIGNED_LONG": "ulVal", "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": "ullVal",
               "NVML_VALUE_TYPE_SIGNED_LONG_LONG": "sllVal", "NVML_VALUE_TYPE_SIGNED_INT": "siVal",
               "NVML_VALUE_TYPE_UNSIGNED_SHORT": "usVal"}
    for type_name, member in members.items():
        if getattr(pynvml, type_name, None) == value.valueType:
            return float(getattr(value.value, member))
    raise NotInBindings(f"field value of unknown type {value.valueType}")


def _clock(key: str, getter: str, clock: str) -> Query:
    def query(handle: Any, _: Collection[int]) -> Fields:
        return {key: int(_call(getter, handle, _const(clock)))}
    return query


def _clock_events(handle: Any, _: Collection[int]) -> Fields:
    return {"clock_event_reasons": int(_call("nvmlDeviceGetCurrentClocksEventReasons", handle))}


def _clock_throttle(handle: Any, _: Collection[int]) -> Fields:
    # the name of the same call before NVML 12.2; older drivers only have this one
    return {"clock_event_reasons": int(_call("nvmlDeviceGetCurrentClocksThrottleReasons", handle))}


def _power(handle: Any, _: Collection[int]) -> Fields:
    return {"power_mw": int(_call("nvmlDeviceGetPowerUsage", handle))}


def _power_limit(handle: Any, _: Collection[int]) -> Fields:
    return {"power_limit_mw": int(_call("nvmlDeviceGetEnforcedPowerLimit", handle))}


def _memory(handle: Any, _: Collection[int]) -> Fields:
    info = _call("nvmlDeviceGetMemoryInfo", handle)
    return {"memory_used_bytes": int(info.used), "memory_total_bytes": int(info.total)}


def _utilization(handle: Any, _: Collection[int]) -> Fields:
    rates = _call("nvmlDeviceGetUtilizationRates", handle)
    return {"utilization_gpu_pct": int(rates.gpu), "utilization_memory_pct": int(rates.memory)}


def _performance_state(handle: Any, _: Collection[int]) -> Fields:
    state = int(_call("nvmlDeviceGetPerformanceState", handle))
    unknown = getattr(pynvml, "NVML_PSTATE_UNKNOWN", None)
    return {"performance_state": None if state == unknown else state}


def _process_memory(handle: Any, pids: Collection[int]) -> Fields:
    """GPU memory of the target's processes: 0 when none of them uses this GPU."""
    if not pids:
        return {}
    procs = list(_call("nvmlDeviceGetComputeRunningProcesses", handle))
    try:
        procs += _call("nvmlDeviceGetGraphicsRunningProcesses", handle)
    except UNSUPPORTED:
        pass  # compute processes are what inference uses
    used: dict[int, int] = {}
    unknown = False
    for proc in procs:
        if proc.pid not in pids:
            continue
        amount = _known_bytes(proc.usedGpuMemory)
        if amount is None:
            unknown = True
        else:  # a process in both lists is counted once
            used[proc.pid] = max(used.get(proc.pid, 0), amount)
    if unknown and not used:
        return {}  # the driver does not say (e.g. Windows WDDM, some MIG set-ups)
    return {"process_memory_bytes": sum(used.values())}


def _known_bytes(value: int | None) -> int | None:
    # pynvml maps NVML_VALUE_NOT_AVAILABLE to None; older bindings passed the raw value on
    raw = getattr(getattr(pynvml, "NVML_VALUE_NOT_AVAILABLE_ulonglong", None), "value", None)
    return None if value is None or value == raw else int(value)


# query name -> alternatives, newest API first
QUERIES: dict[str, tuple[Query, ...]] = {
    "temperature": (_temperature_v, _temperature_legacy),
    "slowdown temperature": (_slowdown_threshold,),
    "memory temperature": (_memory_temperature,),
    "SM clock": (_clock("sm_clock_mhz", "nvmlDeviceGetClockInfo", "NVML_CLOCK_SM"),),
    "SM max clock": (_clock("sm_clock_max_mhz", "nvmlDeviceGetMaxClockInfo", "NVML_CLOCK_SM"),),
    "graphics clock": (_clock("graphics_clock_mhz", "nvmlDeviceGetClockInfo", "NVML_CLOCK_GRAPHICS"),),
    "memory clock": (_clock("memory_clock_mhz", "nvmlDeviceGetClockInfo", "NVML_CLOCK_MEM"),),
    "memory max clock": (_clock("memory_clock_max_mhz", "nvmlDeviceGetMaxClockInfo", "NVML_CLOCK_MEM"),),
    "clock event reasons": (_clock_events, _clock_throttle),
    "power": (_power,),
    "power limit": (_power_limit,),
    "memory": (_memory,),
    "utilization": (_utilization,),
    "performance state": (_performance_state,),
    "process memory": (_process_memory,),
}
