"""The scorer for a deploy or restart: an event explains a spike only when something shows
the change it made.

An event is a claim (CI/CD posts one through `POST /api/v1/events` whatever it changed),
so it is checked, not assumed. Two ways to check, by what carries the new version:

- Carried: requests of the event's version inside the spike, a version the baseline's
  requests did not have. Their size-adjusted latency (log latency less what the
  baseline's latency-per-size relation predicts, so a payload shift that happens to
  coincide with a deploy is not blamed on it) against the baseline's, and against the
  old version's requests inside the spike where both served.
- Not carried (no request names the version, or the baseline's requests already named
  it, as a restart's do): judged at the event itself. When the event came clearly
  before the onset, the requests that ended between the two say whether latency per
  request changed across it, size for size, beyond the baseline's own variation; a
  change made by the event shows from its first requests, so unchanged ones clear it.
  When it came at the onset, the target's CPU time per request, adjusted for the
  requests' sizes, against the variation of the baseline's steps: a deploy that slows
  every request costs more per request. (The profile's shape is not asked: a new code
  path that costs nothing per request does not slow anything, and one that does shows
  in the cost.) A slowdown that neither costs CPU nor shows before the onset is left to
  the other candidates. When it came inside the spike, later than the onset's tolerance
  (a late event may still explain a spike whose main rise came later), the CPU per
  request of the spike's steps after it against those before it: the spike's cost over
  the baseline's began before the event and says nothing of it.

The share of the rise the event explains scales its score; an event that changed
nothing scores 0 and says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from pyrometer.collector.analysis.candidate import (
    CHANGE_EVENT_KINDS,
    SHARE,
    Cause,
    Facts,
    lookback_ns,
    none,
    num,
    pct,
)
from pyrometer.collector.analysis.deploy_checks import (
    AcrossEvent,
    across_event,
    cost_across,
    cost_step,
    residuals,
)
from pyrometer.collector.analysis.evidence import EventInfo, SpikeContext
from pyrometer.collector.analysis.robust import Baseline, clip01, median
from pyrometer.collector.storage.reads import RequestSample

MIN_RISE = math.log(1.05)
MIN_VERSION_REQUESTS = 10
MIN_SCORE = 0.05  # below this the event changed nothing measurable: it does not score


def _log_median(requests: Sequence[RequestSample]) -> float:
    return median([math.log(r.latency_ms) for r in requests if r.latency_ms > 0])


def carried(ctx: SpikeContext, event: EventInfo) -> bool:
    """Whether requests name the event's version as something new at it.

    Requests stand for samples too: the agent files each batch, its samples and its
    request records alike, under the target's version at the time, so when no request
    carries a version no sample of that agent does either.
    """
    if not event.version:
        return False
    base, inside = ctx.request_split()
    new = sum(1 for r in inside if r.version == event.version)
    before = [r for r in base if r.end_ns < event.time_ns]
    already = sum(1 for r in before if r.version == event.version)
    return new >= MIN_VERSION_REQUESTS and already < 0.5 * max(1, len(before))


def check_change(ctx: SpikeContext, facts: Facts) -> Facts:
    """`facts` with the change event's own check done (`carried`, and `across_event`
    when nothing carries its version): the deploy scorer and the code-path scorer both
    ask it, and across_event reads every baseline request (about 60 ms of a 140 ms
    ranking at 50,000 requests), so causes.rank does it once per spike."""
    event = facts.change_event
    if event is None or facts.change_carried is not None:
        return facts
    if carried(ctx, event):
        return replace(facts, change_carried=True)
    return replace(facts, change_carried=False, across=across_event(ctx, facts, event))


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
    facts = check_change(ctx, facts)
    if facts.across is None:  # its version is carried (check_change)
        return _score_carried(ctx, facts, event)
    return _score_uncarried(ctx, facts, event, facts.across)


def _what(ctx: SpikeContext, event: EventInfo) -> str:
    before = (ctx.spike.onset_ns - event.time_ns) / 1e9
    what = f"{event.kind} of {event.version or 'the service'}" + (
        f" (from {event.previous_version})" if event.previous_version else "")
    when = f"{before:.0f}s before the onset" if before >= 0 else f"{-before:.0f}s into the spike"
    return f"{what} {when}"


def _common(ctx: SpikeContext, event: EventInfo, new: int, old: int) -> dict[str, object]:
    return {"event": event.kind, "version": event.version,
            "previous_version": event.previous_version,
            "seconds_before_onset": num((ctx.spike.onset_ns - event.time_ns) / 1e9, 1),
            "new_version_requests": new, "old_version_requests": old,
            "baseline_samples_per_request": num(ctx.baseline_profile.per_request
                                                if ctx.baseline_profile else math.nan)}


def _score_carried(ctx: SpikeContext, facts: Facts, event: EventInfo) -> Cause:
    base, inside = ctx.request_split()
    new = [r for r in inside if r.version == event.version]
    old = [r for r in inside if r.version != event.version]
    res_base = median(residuals(base, facts))
    rise_new = median(residuals(new, facts)) - res_base
    rise_old = median(residuals(old, facts)) - res_base if len(old) >= MIN_VERSION_REQUESTS \
        else math.nan
    observed = _log_median(inside) - _log_median(base)
    share = clip01(rise_new / observed) if observed > MIN_RISE else 0.0
    confined = 1.0 if math.isnan(rise_old) else clip01(1 - rise_old / rise_new) \
        if rise_new > 0 else 0.0
    per_bucket = {i: median(residuals(rs, facts)) for i, rs in
                  ctx.request_steps().items()}
    z = Baseline.of([v for i, v in per_bucket.items() if i < 0 and not math.isnan(v)],
                    floor_abs=0.02).z(res_base + rise_new)
    # the version's requests carry it: what they show is the evidence, the event alone little
    score = MIN_SCORE + 0.9 * share * confined
    # with one version serving the whole spike, its profile is the spike's
    cost_new = ctx.version_profiles.get(event.version) or (None if old else ctx.spike_profile)
    evidence = {
        **_common(ctx, event, len(new), len(old)),
        "size_adjusted_rise_new": num(math.expm1(rise_new)),
        "size_adjusted_rise_old": num(math.expm1(rise_old)),
        "observed_rise": num(math.expm1(observed)),
        "new_version_samples_per_request": num(cost_new.per_request if cost_new else math.nan),
        SHARE: num(share * confined),
    }
    old_part = f"; the old version's {pct(math.expm1(rise_old))}" if old and not \
        math.isnan(rise_old) else ""
    explanation = (f"{_what(ctx, event)}; its requests are {pct(math.expm1(rise_new))} slower "
                   f"than the baseline's, size for size{old_part}")
    return Cause("deploy", score, z, explanation, evidence)


def _score_uncarried(ctx: SpikeContext, facts: Facts, event: EventInfo,
                     step: AcrossEvent) -> Cause:
    base, inside = ctx.request_split()
    observed = _log_median(inside) - _log_median(base)
    rise = median(residuals(inside, facts)) - median(residuals(base, facts))
    share = clip01(rise / observed) if observed > MIN_RISE else 0.0
    cost = cost_step(ctx, facts)
    across = cost_across(ctx, event)
    # the requests across the event, where there are enough, say it directly; an event
    # late inside the spike, by the cost per request across it there
    changed, how = (step.changed, step.describe()) if step.known else (
        (across.changed, across.describe()) if across.known else (cost.changed, cost.describe()))
    z = step.z if step.known else cost.z
    score = 0.9 * changed * share
    evidence = {
        **_common(ctx, event, 0, len(inside)), "version_carried": False,
        "requests_across_event": step.requests, "rise_across_event": num(step.rise),
        "z_across_event": num(step.z), "size_adjusted_cpu_per_request_ratio":
        num(cost.ratio), "cpu_per_request_z": num(cost.z),
        "size_adjusted_rise": num(math.expm1(rise)), "observed_rise": num(math.expm1(observed)),
        "cpu_per_request_ratio_across_event": num(across.ratio),
        SHARE: num(share * changed),
    }
    nothing = ("no request or sample carries that version" if event.version else
               "nothing names the new process")
    text = f"{_what(ctx, event)}: {nothing}; {how}"
    if score < MIN_SCORE:
        return none("deploy", text, z, evidence)
    return Cause("deploy", score, z, text, evidence)
