"""The scorer for a code path: a change in the work the server does per request.

Which functions' share of the samples grew from the baseline's flame graph to the
spike's, and how their samples per request (per unit of request size) grew. Discounted
by the share of the rise request sizes explain (larger inputs shift the profile too),
and when a deploy at the onset brought the change (the deploy is then the cause to act
on; scorers_deploy.py scores it).
"""

from __future__ import annotations

import math

from pyrometer.collector.analysis.candidate import Cause, Facts, none, num
from pyrometer.collector.analysis.evidence import CodeProfile, SpikeContext
from pyrometer.collector.analysis.robust import ramp


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
