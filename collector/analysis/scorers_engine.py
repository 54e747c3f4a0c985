"""Scorers that read the serving engine's own metrics (agent --scrape): what happened
inside vLLM, Triton, TorchServe or TGI while latency rose.

Engine queueing: requests waited longer in the engine's queue (its queue-time mean per
request, or its count of waiting requests, up against the baseline) while the compute
time per request stayed flat: the engine had no room, each request cost no more. Where
the engine reports its queue time, the rise in it per request over the rise in the
requests' median latency is the share of the rise the queue explains (`share_of_rise`,
so that a queue and, say, a payload shift at once are ordered by how much each explains;
a mean against a median, an estimate).

Batch saturation: the running batch sat at its limit (the configured maximum where a
mapping gives one, else the highest count the engine reported around the spike) with
requests waiting, where in the baseline it had room.

KV-cache pressure: the KV cache near full, and requests preempted (evicted and
recomputed) more often than in the baseline.

Prompt-token shift: more prompt tokens per request, counted by the engine's tokenizer
rather than by bytes on the wire; the middleware's record_size (app size), where the
app reports one, is shown beside it.

Every one of them needs engine readings: without them each says "no engine metrics"
and does not score, whatever else the spike shows.
"""

from __future__ import annotations

import math

from pyrometer.collector.analysis.candidate import SHARE, Cause, Facts, none, num, pct, timing
from pyrometer.collector.analysis.evidence import SignalSummary, SpikeContext, summarize
from pyrometer.collector.analysis.robust import clip01, median, ramp, ratio
from pyrometer.collector.storage.reads import EngineStep

NO_DATA = "no engine metrics (agent --scrape)"


def _steps(ctx: SpikeContext, metric: str) -> dict[int, list[EngineStep]]:
    out: dict[int, list[EngineStep]] = {}
    for s in ctx.engine:
        if s.metric == metric:
            out.setdefault(s.step, []).append(s)
    return out


def _means(ctx: SpikeContext, metric: str) -> dict[int, float]:
    """Per step: the mean per observation (sum of values over sum of counts)."""
    out = {}
    for i, steps in _steps(ctx, metric).items():
        n = sum(s.count for s in steps)
        if n > 0:
            out[i] = sum(s.counted_total for s in steps) / n
    return out


def _gauges(ctx: SpikeContext, metric: str, highest: bool = False) -> dict[int, float]:
    """Per step: the mean over its scrapes of each scrape's models summed (or their highest)."""
    return {i: sum(s.scrape_highest if highest else s.total for s in steps)
            / sum(s.scrapes for s in steps)
            for i, steps in _steps(ctx, metric).items()}


def _rates(ctx: SpikeContext, metric: str) -> dict[int, float]:
    """Per step: the counter's increase per second."""
    step_s = ctx.step_ns / 1e9
    return {i: sum(s.total for s in steps) / step_s for i, steps in _steps(ctx, metric).items()}


def _has(ctx: SpikeContext, *metrics: str) -> bool:
    return any(s.metric in metrics for s in ctx.engine)


def _spike_values(ctx: SpikeContext, per_step: dict[int, float]) -> list[float]:
    steps = -(-(ctx.spike.end_ns - ctx.spike.start_ns) // ctx.step_ns)
    return [v for i, v in per_step.items() if 0 <= i < steps]


def _rise(signal: SignalSummary | None, rel_lo: float, rel_hi: float) -> float:
    if signal is None or not signal.baseline.n:
        return 0.0
    return ramp(signal.z, 2, 5) * ramp(ratio(signal.spike_value, signal.baseline.median)
                                       if signal.baseline.median > 0 else math.inf,
                                       rel_lo, rel_hi)


def score_engine_queueing(ctx: SpikeContext, facts: Facts) -> Cause:
    """See the module docstring."""
    kind = "engine_queueing"
    if not _has(ctx, "queue_time_s", "requests_waiting"):
        return none(kind, f"{kind}: {NO_DATA}")
    queue = _means(ctx, "queue_time_s")
    waiting = _gauges(ctx, "requests_waiting")
    q = summarize(ctx, queue, floor_abs=0.005, floor_rel=0.1) if queue else None
    w = summarize(ctx, waiting, floor_abs=1.0, floor_rel=0.1) if waiting else None
    q_up, w_up = _rise(q, 1.3, 2.0), _rise(w, 1.5, 3.0) if w is not None else 0.0
    if w is not None and w.baseline.median <= 0 and w.spike_value >= 2 and w.z >= 2:
        w_up = max(w_up, ramp(w.spike_value, 1, 4))  # none waited before: any queue counts
    compute = _means(ctx, "compute_time_s")
    c = summarize(ctx, compute, floor_abs=0.005, floor_rel=0.1) if compute else None
    c_ratio = ratio(c.spike_value, c.baseline.median) if c is not None and c.baseline.n else math.nan
    flat = 0.8 if math.isnan(c_ratio) else 1.0 - ramp(c_ratio, 1.2, 1.6)
    onset = min((s.onset_ns for s in (q, w) if s is not None and s.onset_ns is not None),
                default=None)
    late, late_note = timing(ctx, onset)
    strength = 0.7 * max(q_up, w_up) + 0.3 * min(q_up, w_up) if q and w else max(q_up, w_up)
    score = 0.95 * strength * flat * late
    evidence = {
        "queue_time_ms_baseline": num(q.baseline.median * 1e3 if q else None, 1),
        "queue_time_ms_spike": num(q.spike_value * 1e3 if q else None, 1),
        "queue_time_z": num(q.z if q else None, 2),
        "requests_waiting_baseline": num(w.baseline.median if w else None, 1),
        "requests_waiting_spike": num(w.spike_value if w else None, 1),
        "compute_time_ratio": num(c_ratio), "engines": _engines(ctx),
    }
    if q is not None:
        evidence[SHARE] = num(_share_of_rise(ctx, q.spike_value - q.baseline.median))
    seen = []
    if q is not None:
        seen.append(f"engine queue time {q.baseline.median * 1e3:.0f} -> "
                    f"{q.spike_value * 1e3:.0f} ms per request (z {q.z:.1f})")
    if w is not None:
        seen.append(f"requests waiting {w.baseline.median:.1f} -> {w.spike_value:.1f}")
    what = ", ".join(seen)
    z = max((s.z for s in (q, w) if s is not None), default=0.0)
    if score <= 0:
        why = late_note if strength * flat > 0 else (
            "the compute time per request grew too" if strength > 0 else "the queue did not grow")
        return none(kind, f"{kind}: {what}; {why}", z, evidence)
    compute_note = ("compute time per request not reported" if math.isnan(c_ratio)
                    else f"compute time per request {pct(c_ratio - 1)}")
    return Cause(kind, score, z, f"{what}, {compute_note}: requests wait in the engine's queue",
                 evidence)


def _share_of_rise(ctx: SpikeContext, seconds_per_request: float) -> float:
    """What `seconds_per_request` more of something is of the requests' median latency
    rise, 0..1; NaN where the median rose by less than 5% (a spike of the tail only:
    a share of next to nothing says nothing) or no requests say."""
    base, inside = ctx.request_split()
    if not base or not inside:
        return math.nan
    before = median([r.latency_ms for r in base])
    rise_ms = median([r.latency_ms for r in inside]) - before
    return clip01(1e3 * seconds_per_request / rise_ms) if rise_ms > 0.05 * before else math.nan


def score_batch_saturation(ctx: SpikeContext, facts: Facts) -> Cause:
    """See the module docstring."""
    kind = "batch_saturation"
    if not _has(ctx, "requests_running"):
        return none(kind, f"{kind}: {NO_DATA}" if not ctx.engine
                    else f"{kind}: the engine reports no running-batch size")
    running = _gauges(ctx, "requests_running")
    configured = [s.highest for s in ctx.engine if s.metric == "max_running"]
    cap = max(configured) if configured else max(running.values())
    base = [v for i, v in running.items() if i < 0 and ctx.in_baseline(ctx.spike.start_ns + i * ctx.step_ns)]
    inside = _spike_values(ctx, running)
    waiting = _spike_values(ctx, _gauges(ctx, "requests_waiting"))
    if not inside or not base or cap < 2:
        return none(kind, f"{kind}: too few running-batch readings around the spike")
    spike_run, base_run = median(inside), median(base)
    waited = median(waiting) if waiting else math.nan
    full = ramp(spike_run / cap, 0.85, 0.98)
    had_room = 1.0 - ramp(base_run / cap, 0.85, 0.98)
    queued = 0.5 if math.isnan(waited) else ramp(waited, 0.5, 2.0)
    score = 0.85 * full * had_room * queued
    limit = "configured" if configured else "highest reported"
    evidence = {"batch_limit": num(cap, 1), "limit_source": limit,
                "running_baseline": num(base_run, 1), "running_spike": num(spike_run, 1),
                "waiting_spike": num(waited, 1), "engines": _engines(ctx)}
    seen = (f"running batch {base_run:.0f} -> {spike_run:.0f} of {cap:.0f} ({limit} limit)"
            + ("" if math.isnan(waited) else f", {waited:.0f} waiting"))
    if score <= 0:
        why = ("the batch was not full" if full == 0 else "it was as full in the baseline"
               if had_room == 0 else "nothing waited for a slot")
        return none(kind, f"{kind}: {seen}; {why}", 0.0, evidence)
    return Cause(kind, score, 0.0, f"{seen}: the batch is at its limit and requests queue "
                 "for a slot", evidence)


def score_kv_cache(ctx: SpikeContext, facts: Facts) -> Cause:
    """See the module docstring."""
    kind = "kv_cache_pressure"
    if not _has(ctx, "kv_cache_usage", "preemptions"):
        return none(kind, f"{kind}: {NO_DATA}" if not ctx.engine
                    else f"{kind}: the engine reports no KV-cache usage or preemptions")
    usage = _gauges(ctx, "kv_cache_usage", highest=True)
    preempt = _rates(ctx, "preemptions")
    u_in, p_in = _spike_values(ctx, usage), _spike_values(ctx, preempt)
    u_base = [v for i, v in usage.items() if i < 0]
    p_base = [v for i, v in preempt.items() if i < 0]
    u_spike = max(u_in) if u_in else math.nan
    p_spike = sum(p_in) / len(p_in) if p_in else 0.0
    p_before = sum(p_base) / len(p_base) if p_base else 0.0
    full = ramp(u_spike, 0.85, 0.97) * (1.0 - 0.5 * ramp(median(u_base) if u_base else 0.0, 0.85, 0.97))
    evicted = ramp(p_spike - p_before, 0.02, 0.2)
    p_signal = summarize(ctx, preempt) if preempt else None
    late, late_note = timing(ctx, p_signal.onset_ns if p_signal is not None else None)
    raw = 0.9 * max(evicted * (0.7 + 0.3 * full), 0.6 * full)
    score = raw * late
    evidence = {"kv_cache_usage_baseline": num(median(u_base) if u_base else None),
                "kv_cache_usage_spike_max": num(u_spike),
                "preemptions_per_s_baseline": num(p_before), "preemptions_per_s_spike": num(p_spike),
                "engines": _engines(ctx)}
    usage_note = "KV cache usage not reported" if math.isnan(u_spike) else \
        f"KV cache up to {u_spike:.0%} full"
    seen = f"{usage_note}, preemptions {p_before:.2f}/s -> {p_spike:.2f}/s"
    z = p_signal.z if p_signal is not None else 0.0
    if score <= 0:
        return none(kind, f"{kind}: {seen}; {late_note or 'no pressure'}", z, evidence)
    return Cause(kind, score, z, f"{seen}: requests are evicted from the KV cache and "
                 "recomputed", evidence)


def score_prompt_tokens(ctx: SpikeContext, facts: Facts) -> Cause:
    """See the module docstring."""
    kind = "prompt_tokens_shift"
    if not _has(ctx, "prompt_tokens"):
        return none(kind, f"{kind}: {NO_DATA}" if not ctx.engine
                    else f"{kind}: the engine reports no prompt-token counts")
    per_step = _tokens_per_request(ctx)
    if not per_step:
        return none(kind, f"{kind}: no completed requests to divide the engine's tokens by")
    signal = summarize(ctx, per_step, floor_abs=5.0, floor_rel=0.05)
    tokens_ratio = ratio(signal.spike_value, signal.baseline.median)
    late, late_note = timing(ctx, signal.onset_ns)
    strength = ramp(signal.z, 2, 5) * ramp(tokens_ratio, 1.15, 1.5)
    score = 0.9 * strength * late
    app_ratio = math.nan
    if ctx.size_unit == "app size":
        base, inside = ctx.split([r for r in ctx.requests if r.size is not None], lambda r: r.end_ns)
        if base and inside:
            app_ratio = ratio(median([r.size for r in inside if r.size is not None]),
                              median([r.size for r in base if r.size is not None]))
    evidence = {"prompt_tokens_per_request_baseline": num(signal.baseline.median, 1),
                "prompt_tokens_per_request_spike": num(signal.spike_value, 1),
                "tokens_ratio": num(tokens_ratio), "app_size_ratio": num(app_ratio),
                "engines": _engines(ctx)}
    seen = (f"prompt tokens per request {signal.baseline.median:.0f} -> {signal.spike_value:.0f} "
            f"(z {signal.z:.1f}, the engine's counters)")
    agree = "" if math.isnan(app_ratio) else f"; the app's record_size {pct(app_ratio - 1)}"
    if score <= 0:
        why = late_note if strength > 0 else "prompts did not grow"
        return none(kind, f"{kind}: {seen}; {why}", signal.z, evidence)
    return Cause(kind, score, signal.z, f"{seen}{agree}: longer prompts take longer to prefill",
                 evidence)


def _tokens_per_request(ctx: SpikeContext) -> dict[int, float]:
    tokens, done = _steps(ctx, "prompt_tokens"), _steps(ctx, "requests")
    out = {}
    for i in sorted(tokens.keys() | done.keys()):
        steps = tokens.get(i, [])
        counted = sum(s.count for s in steps)  # a histogram says per how many requests
        n = counted if counted > 0 else sum(s.total for s in done.get(i, ()))
        if n > 0:
            out[i] = sum(s.total for s in steps) / n
    return out


def _engines(ctx: SpikeContext) -> list[str]:
    return sorted({s.engine for s in ctx.engine if s.engine})

