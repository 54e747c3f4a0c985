"""Stored rows and series points turned into the values the scorers read (pure).

Requests carry the app-supplied size (tokens, say) when most of them have one, since
that is the size the work grows with, and the request's bytes otherwise. Several
processes of the target add up; several hosts add up, each counted once however many
instances run on it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace

from pyrometer.agent.shared.clock_events import CLOCK_EVENT_REASONS, SLOWDOWN_REASONS
from pyrometer.agent.shared.model import Frame, Nanos, Stack
from pyrometer.collector.analysis.evidence import CodeProfile, GpuSample, ResourcePoint
from pyrometer.collector.analysis.stages import Classified, StageRule
from pyrometer.collector.analysis.waiting import is_waiting
from pyrometer.collector.model import Profile
from pyrometer.collector.query.diff import StackFunctions, function_stats
from pyrometer.collector.query.tree import FunctionKey
from pyrometer.collector.storage.reads import (
    GpuRow,
    HostPoint,
    ProcessPoint,
    RequestTally,
)

APP_SIZE_SHARE = 0.8


def size_unit(tally: RequestTally) -> str:
    """"app size" when most of the tally's requests carry one, else "bytes": counted over
    every request, also where the analysis judges a sample of them."""
    return "app size" if tally.total and tally.sized >= APP_SIZE_SHARE * tally.total else "bytes"


def gpu_samples(rows: Iterable[GpuRow]) -> tuple[GpuSample, ...]:
    idle_bit = CLOCK_EVENT_REASONS["gpu_idle"]
    # a day's spike reads hundreds of thousands of readings of a few GPUs with a few
    # distinct reason masks: each name and reason tuple is built once
    reasons_of: dict[int, tuple[str, ...]] = {}
    names: dict[tuple[str, int], str] = {}
    out = []
    for r in rows:
        mask = r.clock_event_reasons or 0
        reasons = reasons_of.get(mask)
        if reasons is None:
            reasons = reasons_of[mask] = tuple(
                name for name in SLOWDOWN_REASONS if mask & CLOCK_EVENT_REASONS[name])
        gpu = names.get((r.instance, r.gpu_index))
        if gpu is None:
            gpu = names[(r.instance, r.gpu_index)] = f"{r.instance}/{r.gpu_index}"
        out.append(GpuSample(
            r.time_ns, gpu, reasons, bool(mask & idle_bit),
            _float(r.sm_clock_mhz), _float(r.sm_clock_max_mhz), r.temperature_c,
            r.slowdown_temperature_c, r.replayed))
    return tuple(out)


def _float(value: int | None) -> float | None:
    return None if value is None else float(value)


# below this much CPU in a step (0.05 of a core) a preemption rate is one or two
# switches over nothing: not reported
MIN_CPU_FOR_PREEMPTION = 0.05


def resource_points(procs: Iterable[ProcessPoint], hosts: Iterable[HostPoint],
                    step_s: float | None = None) -> tuple[ResourcePoint, ...]:
    """One point per step: the target's processes summed, each host once; with the
    step's length, also the target's preemptions per CPU-second (None without it)."""
    cpu: dict[Nanos, float] = {}
    rss: dict[Nanos, float] = {}
    switches: dict[Nanos, int] = {}
    waits: dict[Nanos, float] = {}  # only steps where some process said
    for p in procs:
        cpu[p.start_ns] = cpu.get(p.start_ns, 0.0) + p.cpu_user + p.cpu_system
        rss[p.start_ns] = rss.get(p.start_ns, 0.0) + p.rss_bytes_max
        switches[p.start_ns] = switches.get(p.start_ns, 0) + p.ctx_switches_involuntary
        if p.run_queue_wait is not None:
            waits[p.start_ns] = waits.get(p.start_ns, 0.0) + p.run_queue_wait
    by_host: dict[Nanos, dict[str, HostPoint]] = {}
    for h in hosts:
        by_host.setdefault(h.start_ns, {})[h.host] = h
    points = []
    for start in sorted(set(cpu) | set(by_host)):
        seen = list(by_host.get(start, {}).values())
        busy = sum(h.cpu_pct / 100 * h.cpu_count for h in seen) if seen else None
        points.append(ResourcePoint(
            start, cpu.get(start), busy, sum(h.cpu_count for h in seen) or None,
            _worst(h.psi_cpu_some for h in seen), _worst(h.psi_memory_some for h in seen),
            _worst(h.psi_io_some for h in seen), rss.get(start),
            _per_cpu_s(switches.get(start), cpu.get(start), step_s),
            _per_cpu_s(waits.get(start), cpu.get(start), 1.0)))
    return tuple(points)


def _per_cpu_s(amount: float | None, cores: float | None, step_s: float | None) -> float | None:
    """`amount` over a step of `step_s` per CPU-second the target got in it (None below
    MIN_CPU_FOR_PREEMPTION cores, where a rate is one or two events over nothing)."""
    if amount is None or cores is None or not step_s or cores < MIN_CPU_FOR_PREEMPTION:
        return None
    return amount / (cores * step_s)


def _worst(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def code_profile(profile: Profile, requests: int) -> CodeProfile:
    """Inclusive samples per function label of the working samples, the waiting samples
    by their leaf, the profile's total, and its requests.

    A sample whose leaf frame waits (waiting.py) is set apart whole: its callers did
    not work in it either, so a handler whose socket reads grow is not "grown" itself.
    """
    return CodeProfiles().of(profile, requests)


class CodeProfiles:
    """`code_profile` of several profiles read from one store (a spike's, its
    baseline's, its versions'), each stack's functions and each leaf's waiting found
    once for all of them: the store hands them the same stack and frame objects, and
    the spike and its baseline share nearly every stack. It keeps what it has seen
    alive; `StackFacts` bounds one that outlives an analysis."""

    __slots__ = ("_functions", "_leaves")

    def __init__(self) -> None:
        self._functions = StackFunctions()
        # id(leaf frame) -> (the frame, kept alive; its label if it waits, else None)
        self._leaves: dict[int, tuple[Frame, str | None]] = {}

    def of(self, profile: Profile, requests: int) -> CodeProfile:
        """See `code_profile`."""
        working: list[tuple[Stack, int]] = []
        waiting: dict[str, int] = {}
        leaves = self._leaves
        for stack, count in profile.samples:
            if not stack:
                working.append((stack, count))
                continue
            leaf = stack[-1]
            known = leaves.get(id(leaf))
            if known is None:
                known = leaves[id(leaf)] = (
                    leaf, FunctionKey.of(leaf).label if is_waiting(leaf) else None)
            label = known[1]
            if label is None:
                working.append((stack, count))
            else:
                waiting[label] = waiting.get(label, 0) + count
        stats = function_stats(replace(profile, samples=tuple(working)), self._functions)
        return CodeProfile({label: s.total for label, s in stats.items()}, profile.total,
                           requests, waiting)

    def __len__(self) -> int:
        """The stacks and leaves it keeps."""
        return len(self._functions) + len(self._leaves)


class StackFacts:
    """What the analysis finds out about each stack, kept from one analysis to the next:
    its functions and waiting leaf (`CodeProfiles`) and its stage under each set of
    stage rules (`Classified`).

    The store hands out one object per stack for as long as its stack cache holds it,
    so the next analysis of a service (a dashboard's refresh, the next spike, a longer
    window) finds its stacks known: on the bench's day, a spike's two fleet profiles
    hold 4,000 stacks of some 30 frames each, and finding their functions and stages
    took about 90 ms of the analysis. Facts about a stack never change, so keeping
    them is safe for as long as the stack object lives, which the entries see to.
    Bounded as the store's cache is: past `max_entries` it starts again empty.

    Analyses on several threads share one: each holds `lock` while it uses it. The work
    it guards is pure Python, which the GIL would serialise anyway.
    """

    def __init__(self, max_entries: int = 150_000) -> None:
        # about three entries a stack (its functions, its leaf, its stage) of some 320
        # bytes each (tracemalloc, the bench's hour): at the bound some 50,000 stacks, 50 MB
        self.max_entries = max_entries
        self.lock = threading.Lock()
        self.profiles = CodeProfiles()
        self._classified: dict[tuple[StageRule, ...], Classified] = {}

    def classified(self, rules: Sequence[StageRule]) -> Classified:
        """The stages found so far under `rules`. Call with `lock` held."""
        return self._classified.setdefault(tuple(rules), Classified())

    def trim(self) -> None:
        """Start again empty if it has grown past its bound. Call with `lock` held."""
        kept = len(self.profiles) + sum(
            len(c.stacks) + len(c.functions) for c in self._classified.values())
        if kept > self.max_entries:
            self.profiles = CodeProfiles()
            self._classified = {}
