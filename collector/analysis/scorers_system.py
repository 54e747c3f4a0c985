"""Scorers for the machine under the server: GPU throttling, host or process pressure.

GPU throttling: the share of the spike's readings with a slowdown reason (power cap,
HW slowdown, SW/HW thermal, power brake) against the baseline's, the SM clock of busy
readings against its baseline and its max (idle readings are left out: an idle GPU
clocks down and that is no slowdown), and the temperature against its slowdown
threshold.

Host pressure: CPU the host spent beyond the target's own, large against the host's
cores (another process taking them), PSI cpu "some" when others take CPU, PSI memory
and io, and the target's RSS growth. Behind a baseline whose co-tenants already come and
go, the neighbours' z is small however much they take; then what the target gets
decides (`_squeezed`): PSI cpu against its own baseline, a host running full, and how
often the scheduler preempted the target's threads per second of CPU they got (their
involuntary context switches, which the agent reads per process: a delay in the run
queue shows there even where a container hides /proc/pressure), and how long they waited
in a run queue per second of CPU they got (their schedstat: the target's own CPU delay).

A neighbour makes the target's requests wait for a core, not do more work: when the
target's own CPU time per request rose, the slowdown is its own (a code path, larger
inputs), and the other processes' rise is a knock-on (the load generator, the profiler,
the collector doing more) or a coincidence. Likewise when clearly more requests arrived:
the clients and the pipeline beside the target work harder in a surge, and the surge is the cause to act on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from pyrometer.collector.analysis.candidate import Cause, Facts, none, num, pct, timing
from pyrometer.collector.analysis.evidence import GpuSample, ResourcePoint, SpikeContext, summarize
from pyrometer.collector.analysis.robust import mean, ramp


def _share(readings: Sequence[GpuSample]) -> float:
    return sum(1 for r in readings if r.reasons) / len(readings) if readings else math.nan


def _busy_clock(readings: Sequence[GpuSample]) -> float:
    return mean(r.sm_clock_mhz for r in readings if not r.idle and r.sm_clock_mhz is not None)


def score_gpu(ctx: SpikeContext, facts: Facts) -> Cause:
    """See the module docstring."""
    base, inside = ctx.split(ctx.gpu, lambda r: r.time_ns)
    if not inside:
        return none("gpu_throttling", "gpu_throttling: no GPU readings inside the spike")
    shares = {i: _share(rs) for i, rs in ctx.buckets(ctx.gpu, lambda r: r.time_ns).items()}
    signal = summarize(ctx, shares, floor_abs=0.05)
    share_base = _share(base) if base else 0.0
    share_spike = _share(inside)
    clock_base, clock_spike = _busy_clock(base), _busy_clock(inside)
    clock_max = max((r.sm_clock_max_mhz or 0.0) for r in inside) or math.nan
    drop = 1 - clock_spike / clock_base if clock_base > 0 else math.nan
    hottest = max(inside, key=lambda r: r.temperature_c or -math.inf)
    margin = (hottest.slowdown_temperature_c - hottest.temperature_c
              if hottest.slowdown_temperature_c is not None and hottest.temperature_c is not None
              else math.nan)
    # the episode's onset: the first throttled reading from shortly before the spike on
    lead = ctx.spike.start_ns - 2 * ctx.step_ns
    onset = min((r.time_ns for r in ctx.gpu if r.reasons and r.time_ns >= lead), default=None)
    late, late_note = timing(ctx, onset)
    reasons = sorted({reason for r in inside for reason in r.reasons})
    strength = max(ramp(share_spike - share_base, 0.1, 0.5), ramp(drop, 0.1, 0.3))
    hot = 0.1 if margin <= 3 else 0.0
    raw = 0.95 * min(1.0, strength + hot * (strength > 0))
    score = raw * late
    evidence = {
        "baseline_throttled_share": num(share_base), "spike_throttled_share": num(share_spike),
        "reasons": reasons, "baseline_sm_clock_mhz": num(clock_base, 0),
        "spike_sm_clock_mhz": num(clock_spike, 0), "sm_clock_max_mhz": num(clock_max, 0),
        "max_temperature_c": num(hottest.temperature_c, 1),
        "slowdown_temperature_c": num(hottest.slowdown_temperature_c, 1),
        "replayed": any(r.replayed for r in inside),
    }
    seen = (f"readings with a slowdown reason {share_base:.0%} -> {share_spike:.0%}, "
            f"SM clock {clock_base:.0f} -> {clock_spike:.0f} MHz (max {clock_max:.0f})")
    if score <= 0:
        return none("gpu_throttling", f"gpu_throttling: {seen}; {late_note if raw > 0 else 'no throttling'}",
                    signal.z, evidence)
    temp = (f", {hottest.temperature_c:.0f} C against a slowdown threshold of "
            f"{hottest.slowdown_temperature_c:.0f} C" if not math.isnan(margin) else "")
    why = f" ({', '.join(reasons)})" if reasons else ""
    return Cause("gpu_throttling", score, signal.z, f"GPU {seen}{why}{temp}", evidence)


def _delta(ctx: SpikeContext, value: Callable[[ResourcePoint], float | None],
           floor: float) -> tuple[float, float, float, int | None]:
    """(baseline median, spike median, z, onset) of one resource signal."""
    per = {}
    for i, points in ctx.buckets(ctx.resources, lambda p: p.start_ns).items():
        values = [v for v in map(value, points) if v is not None]
        if values:
            per[i] = mean(values)
    s = summarize(ctx, per, floor_abs=floor)
    return s.baseline.median, s.spike_value, s.z, s.onset_ns


def _squeezed(other_rise: float, other_z: float, cores: float, psi_base: float,
              psi_spike: float, psi_z: float, busy_share: float,
              preempt: tuple[float, float, float] = (math.nan, math.nan, math.nan),
              busy_base_share: float = math.nan,
              waited: tuple[float, float, float] = (math.nan, math.nan, math.nan)) -> float:
    """0..1: other processes took clearly more of the host and the target was squeezed.

    Judged by what the target gets, not by the neighbours' z alone: a baseline whose
    co-tenants already come and go makes their z small (issue 12: 0.7 -> 1.43 of 2
    cores was z 2.2), yet the host then ran full and PSI cpu some went 10.8% -> 74.5%.
    The neighbours' rise must still clear their noise (z 1.5) and be a real part of the
    host (0.1 of its cores); the squeeze is PSI cpu some (the share of time runnable
    tasks waited for a core) rising past its own baseline's spread, or doubling by
    5 points or more however noisy that was, or the host running full (nothing left
    for the target to take), or the target's preemptions per CPU-second (baseline,
    spike, z) clearly above their baseline's spread and at least doubled: its threads
    lost their core to someone while they still had work; or, most directly, the time
    its threads waited runnable in a run queue per CPU-second they got (baseline, spike,
    z; schedstat) clearly above its spread and doubled, or up by 0.3 s or more per
    CPU-second from next to nothing.

    A host already (nearly) full in the baseline leaves the neighbours no room to rise
    by 0.1 of its cores, however many of them come: a held-out run had others at 1.57 of
    2 cores, CPU burners took them to only 1.72 (z 0.7), and PSI cpu some went
    44% -> 92%. There the neighbours count when they took at least half of what the
    baseline left free, and the squeeze must be PSI or preemptions (a host that was full
    before says nothing by being full now).
    """
    neighbours = ramp(other_z, 1.0, 2.0) * ramp(other_rise / cores, 0.1, 0.3)
    rise = psi_spike - psi_base
    psi = max(ramp(psi_z, 3, 6) * ramp(rise, 5, 25),
              ramp(psi_spike / max(psi_base, 1.0), 1.5, 2.0) * ramp(rise, 5, 25))
    full = ramp(busy_share, 0.85, 0.97)
    p_base, p_spike, p_z = preempt
    preempted = ramp(p_z, 3, 6) * ramp(p_spike / p_base if p_base > 0 else math.nan, 1.5, 2.5)
    w_base, w_spike, w_z = waited
    delayed = ramp(w_z, 3, 6) * max(
        ramp(w_spike / w_base if w_base > 0 else math.nan, 1.5, 2.5),
        ramp(w_spike - w_base, 0.1, 0.3))
    free = max(1.0 - busy_base_share, 0.05) * cores  # NaN (no baseline readings): no case
    crowded = ramp(busy_base_share, 0.8, 0.95) * ramp(other_rise / free, 0.5, 1.0)
    return max(neighbours * max(psi, full, preempted, delayed),
               crowded * max(psi, preempted, delayed))


def score_host(ctx: SpikeContext, facts: Facts) -> Cause:
    """See the module docstring."""
    _, inside = ctx.split(ctx.resources, lambda p: p.start_ns)
    if not inside:
        return none("host_pressure", "host_pressure: no process or host readings inside the spike")
    cores = max((p.cpu_count or 0) for p in inside) or math.nan
    o_base, o_spike, o_z, o_onset = _delta(ctx, lambda p: p.other_cpu_cores, 0.05)
    c_base, c_spike, c_z, c_onset = _delta(ctx, lambda p: p.psi_cpu_some, 1.0)
    busy = mean(p.host_busy_cores for p in inside if p.host_busy_cores is not None) / cores
    busy_base = _delta(ctx, lambda p: p.host_busy_cores, 0.05)[0] / cores
    p_base, p_spike, p_z, _ = _delta(ctx, lambda p: p.target_preempted_per_cpu_s, 5.0)
    w_base, w_spike, w_z, _ = _delta(ctx, lambda p: p.target_waited_per_cpu_s, 0.02)
    squeezed = _squeezed(o_spike - o_base, o_z, cores, c_base, c_spike, c_z, busy,
                         (p_base, p_spike, p_z), busy_base, (w_base, w_spike, w_z))
    m_base, m_spike, _, m_onset = _delta(ctx, lambda p: p.psi_memory_some, 1.0)
    i_base, i_spike, _, _ = _delta(ctx, lambda p: p.psi_io_some, 1.0)
    r_base, r_spike, _, _ = _delta(ctx, lambda p: p.rss_bytes, 1.0)
    other = ramp(o_z, 2, 5) * ramp((o_spike - o_base) / cores, 0.1, 0.35)
    # PSI cpu counts the target's own waiting too: it supports, never carries, the case
    cpu = max(squeezed, min(1.0, other + 0.3 * ramp(c_spike - c_base, 5, 25) * (other > 0)))
    memory = ramp(m_spike - m_base, 2, 10)
    io = 0.8 * ramp(i_spike - i_base, 5, 25)
    rss = 0.6 * ramp(r_spike / r_base if r_base > 0 else math.nan, 1.2, 2.0)
    cpu_onset = o_onset if o_onset is not None else c_onset
    late, late_note = timing(ctx, cpu_onset if cpu >= max(memory, io, rss) else m_onset)
    # whatever else the host shows, a target doing more work per request explains itself
    own = 1.0 - ramp(facts.cpu_ratio, 1.15, 1.5)  # NaN (no readings): taken as flat
    raw = 0.9 * max(cpu, memory, io, rss) * own * (1.0 - facts.surge)
    score = raw * late
    evidence = {
        "cpu_count": num(cores, 0), "baseline_other_cpu_cores": num(o_base),
        "spike_other_cpu_cores": num(o_spike), "baseline_host_busy_share": num(busy_base),
        "spike_host_busy_share": num(busy),
        "target_squeezed": num(squeezed), "baseline_psi_cpu_some": num(c_base),
        "baseline_target_preempted_per_cpu_s": num(p_base),
        "spike_target_preempted_per_cpu_s": num(p_spike),
        "baseline_target_waited_per_cpu_s": num(w_base),
        "spike_target_waited_per_cpu_s": num(w_spike),
        "spike_psi_cpu_some": num(c_spike), "baseline_psi_memory_some": num(m_base),
        "spike_psi_memory_some": num(m_spike), "baseline_psi_io_some": num(i_base),
        "spike_psi_io_some": num(i_spike), "baseline_rss_bytes": num(r_base, 0),
        "spike_rss_bytes": num(r_spike, 0), "target_cpu_per_request_ratio": num(facts.cpu_ratio),
        "arrivals_ratio": num(facts.arrivals.ratio if facts.arrivals else math.nan),
    }
    # without the target's process readings (host readings alone) the others' share is unknown
    others = ("other processes' CPU unknown (no readings of the target's process)"
              if math.isnan(o_base) or math.isnan(o_spike) else
              f"other processes' CPU {o_base:.2f} -> {o_spike:.2f} of {cores:.0f} cores (z {o_z:.1f})")
    psi = ("PSI cpu some not reported" if math.isnan(c_base) or math.isnan(c_spike)
           else f"PSI cpu some {c_base:.1f}% -> {c_spike:.1f}%")
    seen = f"{others}, {psi}"
    if score <= 0:
        why = late_note if raw > 0 else "no pressure" if own > 0 and facts.surge < 1 else (
            f"the target's own CPU per request rose {pct(facts.cpu_ratio - 1)}: its work grew"
            if own == 0 else "arrivals surged: the host's load follows the traffic")
        return none("host_pressure", f"host_pressure: {seen}; {why}", o_z, evidence)
    extra = "" if memory < 0.2 else f", PSI memory some {m_base:.1f}% -> {m_spike:.1f}%"
    return Cause("host_pressure", score, o_z, f"{seen}{extra}", evidence)
