"""Scorers for what the clients sent: larger payloads, and more of them.

Payload size: the spike's sizes against the baseline's, and how much of the latency
rise the baseline's latency-per-size relation explains (a payload shift must beat a
code-path change: per request the flame graph barely changes, but sizes explain it).

Traffic surge: arrivals (requests by start time, so a backlog released after a stall
is not a surge) against the baseline, queueing (latency rising with arrivals across
buckets), while the CPU cost per request stays flat, size for size: a surge makes
requests wait, it does not make each one costlier.

Both at once (larger inputs during a surge): each names its share of the rise, the
payload what the latency-per-size relation predicts, the surge what sizes leave, and
the ranking orders them by it (causes.py).
"""

from __future__ import annotations

import math

from pyrometer.collector.analysis.candidate import (
    SHARE,
    Cause,
    Facts,
    lookback_ns,
    none,
    num,
    pct,
    timing,
)
from pyrometer.collector.analysis.evidence import SpikeContext
from pyrometer.collector.analysis.robust import median, ramp, spearman


def score_payload(ctx: SpikeContext, facts: Facts) -> Cause:
    """See the module docstring; the size model is computed once, in Facts."""
    m = facts.sizes
    if m is None:
        return none("payload_size", "payload_size: no request sizes inside the spike and baseline")
    size_ratio = m.spike_size / m.base_size if m.base_size > 0 else math.nan
    evidence = {
        "unit": ctx.size_unit, "baseline_size_median": num(m.base_size, 1),
        "spike_size_median": num(m.spike_size, 1), "size_ratio": num(size_ratio),
        "latency_per_size_exponent": num(m.beta), "exponent_assumed": m.assumed,
        "predicted_latency_rise": num(m.predicted_rise),
        "observed_latency_rise": num(m.observed_rise), "explained": num(m.explained),
        SHARE: num(m.explained),
    }
    late, late_note = timing(ctx, m.size_onset_ns)
    # a clear shift in sizes is evidence by itself; the relation says how much it explains
    raw = 0.95 * ramp(m.size_z, 2, 5) * ramp(size_ratio, 1.1, 1.4) * (0.3 + 0.7 * m.explained)
    score = raw * late
    sizes = f"{ctx.size_unit} median {m.base_size:.0f} -> {m.spike_size:.0f} (z {m.size_z:.1f})"
    if score <= 0:
        why = late_note if raw > 0 else ("sizes did not grow" if not size_ratio > 1.1
                                         or m.size_z < 2 else "sizes do not explain the rise")
        return none("payload_size", f"payload_size: {sizes}; {why}", m.size_z, evidence)
    assumed = ", assumed proportional" if m.assumed else ""
    explanation = (f"request {sizes}; the baseline's latency-per-size relation{assumed} "
                   f"predicts median latency {pct(m.predicted_rise)}, observed "
                   f"{pct(m.observed_rise)}: explains {m.explained:.0%}")
    return Cause("payload_size", score, m.size_z, explanation, evidence)


def score_traffic(ctx: SpikeContext, facts: Facts) -> Cause:
    """See the module docstring."""
    signal = facts.arrivals
    if signal is None:
        return none("traffic_surge", "traffic_surge: no request records")
    base_rate = signal.baseline.median
    rate_ratio = signal.ratio
    arrivals = {i: float(n) for i, n in ctx.arrivals_per_step().items()}
    latency = {i: median([r.latency_ms for r in rs]) for i, rs in
               ctx.request_steps().items()}
    shared = [i for i in arrivals if i in latency]
    queueing = spearman([arrivals[i] for i in shared], [latency[i] for i in shared])
    # CPU time per request where the process readings tell it: the threads queued for a
    # worker are sampled too, so samples per request grow in a surge while the work does not
    # Size for size: larger inputs during the surge cost more per request without any
    # request doing more work than its size asks (issue 12: a surge with longer inputs
    # read as "the CPU cost per request grew" and scored 0)
    cost = (facts.cpu_ratio if not math.isnan(facts.cpu_ratio) else facts.cost_ratio) / (
        1.0 + facts.sizes.predicted_rise if facts.sizes is not None else 1.0)
    flat = 1.0 - ramp(cost, 1.2, 1.6)  # NaN (neither known): taken as flat
    # a restart releases the requests that queued while it ran; an event that restarted
    # nothing (a deploy posted by CI/CD) does not
    backlog = any(e.kind == "restart" and abs(e.time_ns - ctx.spike.onset_ns) <= lookback_ns(ctx)
                  for e in ctx.events)
    share = 1.0 - facts.size_explained  # of the rise: what sizes leave to the queue
    late, late_note = timing(ctx, signal.onset_ns)
    step_s = ctx.step_ns / 1e9
    evidence = {
        "baseline_rate_per_s": num(base_rate / step_s), "spike_rate_per_s":
        num(signal.spike_per_step / step_s), "rate_ratio": num(rate_ratio),
        "latency_vs_arrivals_correlation": num(queueing), "cost_per_request_ratio":
        num(facts.cost_ratio), "cpu_per_request_ratio": num(facts.cpu_ratio),
        "size_adjusted_cost_ratio": num(cost), "after_restart": backlog,
        SHARE: num(share),
    }
    surge = signal.surge
    raw = 0.9 * surge * flat * (0.7 + 0.3 * ramp(queueing, 0.0, 0.5)) * (0.5 if backlog else 1.0)
    score = raw * late
    rates = (f"arrivals {base_rate / step_s:.1f}/s -> {signal.spike_per_step / step_s:.1f}/s "
             f"(z {signal.z:.1f})")
    if score <= 0:
        why = late_note if raw > 0 else ("no surge" if surge == 0 else
                                         "the CPU cost per request grew too")
        return none("traffic_surge", f"traffic_surge: {rates}; {why}", signal.z, evidence)
    per = "" if math.isnan(cost) else f", cost per request {pct(cost - 1)} size for size"
    part = "" if share > 0.95 else f"; the {share:.0%} of the rise that sizes do not explain"
    explanation = (f"{rates}, latency rising with arrivals (rank correlation "
                   f"{queueing:.2f}){per}: requests queue for workers{part}")
    return Cause("traffic_surge", score, signal.z, explanation, evidence)
