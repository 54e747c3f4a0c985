"""The scorer for a code path: a change in the work the server does per request.

Which functions' share of the working samples grew from the baseline's flame graph to the
spike's, and how their samples per request (per unit of request size) grew. Discounted
by the share of the rise request sizes explain (larger inputs shift the profile too),
and when a deploy near the onset may have brought the change (the deploy is then the
cause to act on; scorers_deploy.py scores it), unless the deploy's own check cleared it.

Work, not waiting: samples whose leaf is a waiting frame (a socket read, a lock, a
selector: waiting.py) are left out of the shares and the samples per request, since
they grow whenever anything else slows the server (a starved host, a queue, a slow
peer) without any code changing. Waits that no frame shows (the GIL, a C-level sleep)
are caught by the other condition: the target's CPU time per request must grow too
for the score to pass half.
"""

from __future__ import annotations

import math

from pyrometer.collector.analysis.candidate import Cause, Facts, none, num
from pyrometer.collector.analysis.evidence import CodeProfile, SpikeContext
from pyrometer.collector.analysis.robust import ramp
from pyrometer.collector.analysis.scorers_deploy import check_change
from pyrometer.collector.analysis.waiting import is_waiting_label


def _grown(spike: CodeProfile, base: CodeProfile) -> list[tuple[float, str, float, float]]:
    """(share delta, function, baseline share, spike share) of the working samples,
    largest delta first; waiting frames are never a row (see the module docstring)."""
    rows = []
    for fn in set(spike.functions) | set(base.functions):
        if is_waiting_label(fn):
            continue
        s = spike.functions.get(fn, 0) / spike.working
        b = base.functions.get(fn, 0) / base.working
        rows.append((s - b, fn, b, s))
    return sorted(rows, key=lambda row: (-row[0], row[1]))


def _waits(spike: CodeProfile, base: CodeProfile) -> str:
    """What the waiting frames did, for the note; "" when there were none."""
    sw, bw = spike.total - spike.working, base.total - base.working
    if not sw and not bw:
        return ""
    top = max(spike.waiting, key=lambda k: spike.waiting[k], default="") or max(
        base.waiting, key=lambda k: base.waiting[k])
    return (f"; waiting frames (most: {top}) {bw / base.total:.0%} -> {sw / spike.total:.0%} "
            "of samples, left out: time spent waiting grows with any slowdown")


def _came_with_deploy(ctx: SpikeContext, facts: Facts) -> bool:
    """Whether the deploy or rollback near the onset may have brought the change: not
    when its own check cleared it (no request carries its version, and the requests
    that began right after it were no slower, size for size: scorers_deploy.py says
    "unchanged across it"). A code path that the deploy did not bring is not the
    deploy's to act on, and the note must not say it came with one the deploy's own
    note says changed nothing (the quick evaluation's decoy deploy, 15 s before a
    runtime flag, took 40% off the flag's score that way)."""
    event = facts.change_event
    if event is None or event.kind not in {"deploy", "rollback"}:
        return False
    across = check_change(ctx, facts).across
    if across is None:  # its version is carried: the deploy brought what its requests show
        return True
    return not across.known or across.changed > 0


def score_code_path(ctx: SpikeContext, facts: Facts) -> Cause:
    """See the module docstring."""
    sp, bp = ctx.spike_profile, ctx.baseline_profile
    if sp is None or bp is None or not sp.working or not bp.working:
        return none("code_path", "code_path: no working profile samples in the spike or its "
                    "baseline")
    rows = _grown(sp, bp)
    waits = _waits(sp, bp)
    if not rows or rows[0][0] <= 0:
        return none("code_path", f"code_path: no working function's share of samples grew{waits}")
    top = rows[0][0]
    # the callers of a grown function grow as much: name the most specific one
    delta, fn, b, s = min((r for r in rows if r[0] >= 0.8 * top), key=lambda r: (r[2], -r[0]))
    per_b, per_s = b * bp.working_per_request, s * sp.working_per_request
    # per request and per unit of size: larger inputs make every function cost more
    sizes = facts.sizes
    size_ratio = max(1.0, sizes.spike_size / sizes.base_size) if sizes and sizes.base_size else 1.0
    growth = per_s / per_b / size_ratio if per_b > 0 else math.inf
    pooled = (s * sp.working + b * bp.working) / (sp.working + bp.working)
    z = delta / math.sqrt(pooled * (1 - pooled) * (1 / sp.working + 1 / bp.working) or 1e-12)
    came_with_deploy = _came_with_deploy(ctx, facts)
    # the work per request grew: CPU time per request where the process readings tell it
    # (samples per request also grow when the target only waits for a core)
    costlier = facts.cpu_ratio if not math.isnan(facts.cpu_ratio) else facts.cost_ratio
    score = (0.9 * ramp(delta, 0.05, 0.2) * ramp(growth, 1.3, 2.0)
             * (0.5 + 0.5 * ramp(costlier, 1.05, 1.3)) * (1 - facts.size_explained)
             * (0.6 if came_with_deploy else 1.0))
    evidence = {
        "functions": [{"function": f, "baseline_share": num(bb), "spike_share": num(ss),
                       "baseline_per_request": num(bb * bp.working_per_request),
                       "spike_per_request": num(ss * sp.working_per_request)}
                      for _, f, bb, ss in rows[:3]],
        "baseline_samples": bp.total, "spike_samples": sp.total,
        "baseline_samples_per_request": num(bp.per_request),
        "spike_samples_per_request": num(sp.per_request),
        "baseline_waiting_share": num(1 - bp.working / bp.total),
        "spike_waiting_share": num(1 - sp.working / sp.total),
        "target_cpu_per_request_ratio": num(facts.cpu_ratio),
        "size_ratio": num(size_ratio), "size_explained": num(facts.size_explained),
        "came_with_deploy": came_with_deploy,
    }
    seen = (f"{fn} {b:.0%} -> {s:.0%} of working samples, {per_b:.1f} -> {per_s:.1f} per "
            "request")
    if score <= 0:
        return none("code_path", f"code_path: largest share change {seen}; not enough to "
                    f"explain the spike{waits}", z, evidence)
    tail = " (came with the deploy)" if came_with_deploy else ""
    return Cause("code_path", score, z, seen + tail, evidence)
