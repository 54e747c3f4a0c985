"""Fault injectors: each turns one fault on at a recorded time and off again.

`start` and `stop` return the wall-clock time (unix seconds) the fault began or ended.
Faults the load generator carries out (payload size, traffic surge) are given to it as a
schedule up front; their times are the ones it reports when each step took effect.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

from pyrometer.collector.procs import Child, python_env, start
from scenarios.plan import BASE_RATE, BASE_VERSION, BASE_WORDS, LLM_WORDS, RAMP_STEPS, RunPlan

if TYPE_CHECKING:
    from scenarios.harness import Stack

BURN = "print('burning', flush=True)\nwhile True: pass"


class Injector(Protocol):
    def load_steps(self, plan: RunPlan) -> list[dict[str, float]]: ...
    def start(self, stack: Stack) -> float | None: ...
    def stop(self, stack: Stack) -> float | None: ...


class NoFault:
    """Null runs, and the base for injectors that act through one side only."""

    def load_steps(self, plan: RunPlan) -> list[dict[str, float]]:
        return []

    def start(self, stack: Stack) -> float | None:
        return None

    def stop(self, stack: Stack) -> float | None:
        return None


class LoadShift(NoFault):
    """Payload size or rate changed by the load generator itself, at the planned offsets."""

    def __init__(self, key: str, value: float, base: float | None = None) -> None:
        self._key, self._value = key, value
        self._base = base if base is not None else BASE_RATE if key == "rate" else BASE_WORDS

    def load_steps(self, plan: RunPlan) -> list[dict[str, float]]:
        return [{"at": plan.fault_at_s, self._key: self._value},
                {"at": plan.fault_at_s + plan.fault_s, self._key: self._base}]


class Deploy(NoFault):
    """Stop the server and start a slower version in its place; roll back at the end."""

    def __init__(self, version: str) -> None:
        self._version = version

    def start(self, stack: Stack) -> float | None:
        began = time.time()
        stack.restart_server(self._version)
        return began

    def stop(self, stack: Stack) -> float | None:
        began = time.time()
        stack.restart_server(BASE_VERSION)
        return began


class Flag(NoFault):
    """Set a runtime flag in the server's flags file, no deploy: a code path changed
    (costly_postprocess=1, then 0), or an engine limit (max_num_seqs=5, then nothing: the
    server's default again, `off` None)."""

    def __init__(self, name: str, on: int = 1, off: int | None = 0) -> None:
        self._name, self._on, self._off = name, on, off

    def start(self, stack: Stack) -> float | None:
        return self._write(stack, f"{self._name}={self._on}\n")

    def stop(self, stack: Stack) -> float | None:
        return self._write(stack, "" if self._off is None else f"{self._name}={self._off}\n")

    def _write(self, stack: Stack, text: str) -> float:
        tmp = stack.flags_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(stack.flags_file)  # atomic: the server never reads half a file
        return time.time()


class Burners(NoFault):
    """Processes spinning on the host's CPUs: pressure from outside the server."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._children: list[Child] = []

    def start(self, stack: Stack) -> float | None:
        for i in range(self._count):
            child = start(f"burner-{i}", [sys.executable, "-c", BURN], "burning", stack.logs,
                          env=python_env())
            self._children.append(child)
            stack.children.append(child)  # so that a run that fails midway still ends them
        return time.time()

    def stop(self, stack: Stack) -> float | None:
        ended = time.time()
        for child in self._children:
            child.stop()
        return ended


class Ramp(NoFault):
    """Gradual onset: the load rate climbs to its peak in equal steps over `ramp_s`, holds,
    and drops back to the base at the fault's end."""

    def __init__(self, peak: float, ramp_s: float, steps: int = RAMP_STEPS) -> None:
        self._peak, self._ramp_s, self._steps = peak, ramp_s, steps

    def load_steps(self, plan: RunPlan) -> list[dict[str, float]]:
        rise = [{"at": plan.fault_at_s + self._ramp_s * i / self._steps,
                 "rate": BASE_RATE + (self._peak - BASE_RATE) * (i + 1) / self._steps}
                for i in range(self._steps)]
        return [*rise, {"at": plan.fault_at_s + plan.fault_s, "rate": BASE_RATE}]


class Overlap(NoFault):
    """Two faults overlapping: a code path flipped on, and a load shift that joins it
    `offset_s` later and ends with it."""

    def __init__(self, flag: Flag, shift: LoadShift, offset_s: float) -> None:
        self._flag, self._shift, self._offset_s = flag, shift, offset_s

    def load_steps(self, plan: RunPlan) -> list[dict[str, float]]:
        first, last = self._shift.load_steps(plan)
        return [dict(first, at=plan.fault_at_s + self._offset_s), last]

    def start(self, stack: Stack) -> float | None:
        return self._flag.start(stack)

    def stop(self, stack: Stack) -> float | None:
        return self._flag.stop(stack)


def injector(plan: RunPlan) -> Injector:
    """The injector for a plan's scenario. GPU throttling is driven by gpu_sim instead."""
    m: dict[str, Any] = plan.magnitude
    if plan.scenario == "payload_size":
        return LoadShift("text_words", float(m["text_words"]))
    if plan.scenario == "traffic_surge":
        return LoadShift("rate", float(m["rate"]))
    if plan.scenario == "deploy":
        return Deploy(str(m["version"]))
    if plan.scenario in ("code_path", "one_of_two"):
        return Flag(str(m["flag"]))
    if plan.scenario == "host_pressure":
        return Burners(int(m["burners"]))
    if plan.scenario == "overlap":
        return Overlap(Flag(str(m["flag"])), LoadShift("rate", float(m["rate"])),
                       float(m["offset_s"]))
    if plan.scenario == "gradual_surge":
        return Ramp(float(m["rate"]), float(m["ramp_s"]))
    if plan.scenario == "llm_prompt_shift":
        return LoadShift("text_words", float(m["text_words"]), LLM_WORDS)
    if plan.scenario in ("llm_queueing", "llm_kv_pressure"):
        (name, value), = m.items()
        return Flag(name, int(value), off=None)
    return NoFault()


def load_step_times(loadgen_output: str) -> list[float]:
    """Unix times at which the load generator applied its schedule steps, in order."""
    prefix = "loadgen step: "
    return [float(json.loads(line[len(prefix):])["unix"])
            for line in loadgen_output.splitlines() if line.startswith(prefix)]
