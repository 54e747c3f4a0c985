"""Scorers for what changed in the server: a deploy or restart, and a code path.

Deploy or restart: an event shortly before or at the onset, and whether the slowdown
is the new version's: its requests' size-adjusted latency (log latency less what the
baseline's latency-per-size relation predicts, so a payload shift that happens to
coincide with a deploy is not blamed on it) against the baseline's, and against the old
version's requests inside the spike where both served. The event alone scores 0.3.

Code path: which functions' share of the samples grew from the baseline's flame graph
to the spike's, and how their samples per request (per unit of request size) grew.
Discounted by the share of the rise request sizes explain (larger inputs shift the
profile too), and when a deploy at the onset brought the change (the deploy is then
the cause to act on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pyrometer.collector.analysis.candidate import (
    CHANGE_EVENT_KINDS,
    Cause,
    Facts,
    lookback_ns,
    none,
    num,
    pct,
)
from pyrometer.collector.analysis.evidence import CodeProfile, RequestSample, SpikeContext
from pyrometer.collector.analysis.robust import Baseline, clip01, median, ramp

MIN_RISE = math.log(1.05)
MIN_VERSION_REQUESTS = 10


def _residuals(requests: Sequence[RequestSample], facts: Facts) -> list[float]:
    out = []
    for r in requests:
        value = facts.sizes.residual(r) if facts.sizes is not None else None
        if value is None and r.latency_ms > 0:
            value = math.log(r.latency_ms)
        if value is not None:
            out.append(value)
    return out


def score_deploy(ctx: SpikeContext, facts: Facts) -> Cause:
    """See the module docstring."""
    event = facts.change_event
    onset = ctx.spike.onset_ns
    if event is None:
        later = [e for e in ctx.events if e.kind in CHANGE_EVENT_KINDS and e.time_ns > onset]
        after = f"; the {later[0].kind} at +{(later[0].time_ns - onset) / 1e9:.0f}s came " \
                "after the onset" if later else ""
        return none("deploy", f"deploy: no deploy or restart event from "
                    f"{lookback_ns(ctx) / 1e9:.0f}s before the onset to "
                    f"{ctx.tolerance_ns / 1e9:.0f}s after it or its main rise{after}")
    base, inside = ctx.split(ctx.requests, lambda r: r.end_ns)
    new = [r for r in inside if r.version == event.version]
    old = [r for r in inside if r.version != event.version]
    if len(new) < MIN_VERSION_REQUESTS:
        new, old = inside, []  # the version is not on the requests: judge them all
    res_base = median(_residuals(base, facts))
    rise_new = median(_residuals(new, facts)) - res_base
    rise_old = median(_residuals(old, facts)) - res_base if len(old) >= MIN_VERSION_REQUESTS \
        else math.nan
    observed = median([math.log(r.latency_ms) for r in inside if r.latency_ms > 0]) - \
        median([math.log(r.latency_ms) for r in base if r.latency_ms > 0])
    share = clip01(rise_new / observed) if observed > MIN_RISE else 0.0
    confined = 1.0 if math.isnan(rise_old) else clip01(1 - rise_old / rise_new) \
        if rise_new > 0 else 0.0
    per_bucket = {i: median(_residuals(rs, facts)) for i, rs in
                  ctx.buckets(ctx.requests, lambda r: r.end_ns).items()}
    z = Baseline.of([v for i, v in per_bucket.items() if i < 0 and not math.isnan(v)],
                    floor_abs=0.02).z(res_base + rise_new)
    score = 0.3 + 0.65 * share * confined
    before = (onset - event.time_ns) / 1e9
    # with one version serving the whole spike, its profile is the spike's
    cost_new = ctx.version_profiles.get(event.version) or (None if old else ctx.spike_profile)
    evidence = {
        "event": event.kind, "version": event.version, "previous_version": event.previous_version,
        "seconds_before_onset": num(before, 1), "new_version_requests": len(new),
        "old_version_requests": len(old), "size_adjusted_rise_new": num(math.expm1(rise_new)),
        "size_adjusted_rise_old": num(math.expm1(rise_old)), "observed_rise":
        num(math.expm1(observed)), "new_version_samples_per_request":
        num(cost_new.per_request if cost_new else math.nan),
        "baseline_samples_per_request": num(ctx.baseline_profile.per_request
                                            if ctx.baseline_profile else math.nan),
    }
    what = f"{event.kind} of {event.version or 'the service'}" + (
        f" (from {event.previous_version})" if event.previous_version else "")
    when = f"{before:.0f}s before the onset" if before >= 0 else f"{-before:.0f}s into the spike"
    old_part = f"; the old version's {pct(math.expm1(rise_old))}" if old and not \
        math.isnan(rise_old) else ""
    explanation = (f"{what} {when}; its requests are {pct(math.expm1(rise_new))} slower than "
                   f"the baseline's, size for size{old_part}")
    return Cause("deploy", score, z, explanation, evidence)


def _grown(spike: CodeProfile, base: CodeProfile) -> list[tuple[float, str, float, float]]:
    """(share delta, function, baseline share, spike share), largest delta first."""
    rows = []
    for fn in set(spike.functions) | set(base.functions):
        s = spike.functions.get(fn, 0) / spike.total
        b = base.functions.get(fn, 0) / base.total
        rows.append((s - b, fn, b, s))
    return sorted(rows, key=lambda row: (-row[0], row[1]))


def score_code_path(ctx: SpikeContext, facts: Facts) -> Cause:
    """See the module docstring."""
    sp, bp = ctx.spike_profile, ctx.baseline_profile
    if sp is None or bp is None or not sp.total or not bp.total:
        return none("code_path", "code_path: no profile samples in the spike or its baseline")
    rows = _grown(sp, bp)
    top = rows[0][0]
    if top <= 0:
        return none("code_path", "code_path: no function's share of samples grew")
    # the callers of a grown function grow as much: name the most specific one
    delta, fn, b, s = min((r for r in rows if r[0] >= 0.8 * top), key=lambda r: (r[2], -r[0]))
    per_b, per_s = b * bp.per_request, s * sp.per_request
    # per request and per unit of size: larger inputs make every function cost more
    sizes = facts.sizes
    size_ratio = max(1.0, sizes.spike_size / sizes.base_size) if sizes and sizes.base_size else 1.0
    growth = per_s / per_b / size_ratio if per_b > 0 else math.inf
    pooled = (s * sp.total + b * bp.total) / (sp.total + bp.total)
    z = delta / math.sqrt(pooled * (1 - pooled) * (1 / sp.total + 1 / bp.total) or 1e-12)
    came_with_deploy = facts.change_event is not None and facts.change_event.kind in {
        "deploy", "rollback"}
    # the work per request grew: CPU time per request where the process readings tell it
    # (samples per request also grow when the target only waits for a core)
    costlier = facts.cpu_ratio if not math.isnan(facts.cpu_ratio) else facts.cost_ratio
    score = (0.9 * ramp(delta, 0.05, 0.2) * ramp(growth, 1.3, 2.0)
             * (0.5 + 0.5 * ramp(costlier, 1.05, 1.3)) * (1 - facts.size_explained)
             * (0.6 if came_with_deploy else 1.0))
    evidence = {
        "functions": [{"function": f, "baseline_share": num(bb), "spike_share": num(ss),
                       "baseline_per_request": num(bb * bp.per_request),
                       "spike_per_request": num(ss * sp.per_request)}
                      for _, f, bb, ss in rows[:3]],
        "baseline_samples": bp.total, "spike_samples": sp.total,
        "baseline_samples_per_request": num(bp.per_request),
        "spike_samples_per_request": num(sp.per_request),
        "target_cpu_per_request_ratio": num(facts.cpu_ratio),
        "size_ratio": num(size_ratio), "size_explained": num(facts.size_explained),
        "came_with_deploy": came_with_deploy,
    }
    seen = (f"{fn} {b:.0%} -> {s:.0%} of samples, {per_b:.1f} -> {per_s:.1f} samples per "
            "request")
    if score <= 0:
        return none("code_path", f"code_path: largest share change {seen}; not enough to "
                    "explain the spike", z, evidence)
    tail = " (came with the deploy)" if came_with_deploy else ""
    return Cause("code_path", score, z, seen + tail, evidence)
