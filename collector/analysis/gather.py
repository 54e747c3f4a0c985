"""The thin shell around detection and scoring: read a Store, call the pure core.

`analyze` reads the latency series from `baseline` before `from` to `to` (so the
first buckets have a baseline too), detects spikes service-wide and per route (a
route's spike inside a service-wide one adds nothing and is left out), and for each
spike reads what its baseline and the spike hold: request records, GPU readings,
process and host points (of those steps only), events and the two profiles, which the
scorers then rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.analysis.causes import Ranking, rank
from pyrometer.collector.analysis.detect import Bucket, DetectConfig, Detection, Spike, detect
from pyrometer.collector.analysis.evidence import EventInfo, ResourcePoint, SpikeContext
from pyrometer.collector.analysis.inputs import (
    StackFacts,
    gpu_samples,
    resource_points,
    size_unit,
)
from pyrometer.collector.analysis.localise import QUANTILES, InstanceRise, Localisation, localise
from pyrometer.collector.analysis.stages import (
    DEFAULT_RULES,
    StageChange,
    StageRule,
    compare,
    split,
)
from pyrometer.collector.model import Profile, merge
from pyrometer.collector.storage.reads import (
    REPLAYED_NOTICE,
    QuantilePoint,
    RequestRow,
    RequestTally,
    SeriesQuery,
)
from pyrometer.collector.storage.store import Store

MAX_SPIKES = 20  # analysed per answer, the largest by z
MAX_ROUTES = 5  # the busiest routes get their own series
MAX_VERSIONS = 3  # versions inside a spike that get their own profile
SLOWEST = 5  # the spike's slowest requests listed, with their trace ids
REQUEST_MARGIN_NS = 60 * NANOS_PER_SECOND  # requests that began in the spike end later
# A spike of a large fleet is judged on a sample of its requests and GPU readings: a
# day's spike of a hundred instances holds some 400,000 requests and 200,000 readings,
# the analysis' time grows with them, and what the scorers conclude (medians, shares,
# fits, per-step percentiles) is as clear from tens of thousands. The sample is
# deterministic (a hash of each row: the same data gives the same answer) and uniform
# in time; every count (rates, requests per step, per version, per profile sample), the
# onset, the localisation and the slowest requests come from the store over all rows.
# Below the budgets nothing is sampled: every spike of the evaluation's scenarios is.
REQUEST_BUDGET = 50_000
GPU_BUDGET = 20_000
# each stack's functions and stage, kept from one analysis to the next (inputs.StackFacts)
FACTS = StackFacts()
# A spike's reads (its requests, tally, two profiles, GPU, engine, process and host
# readings, slowest requests) do not depend on one another and run side by side: DuckDB
# releases the GIL while it scans, so one read's SQL overlaps another's decoding into
# Python objects. Four at once, on two cores, took the analysis of the bench's day of a
# hundred instances from 1,054 to 932 ms (medians of 8, one after the other in one
# process); the rest of its time holds the GIL (decoding, scoring), so more only queue.
READERS = 4


@dataclass(frozen=True, slots=True)
class SpikeQuery:
    service: str
    start_ns: Nanos
    end_ns: Nanos
    config: DetectConfig
    stage_rules: tuple[StageRule, ...] = DEFAULT_RULES


@dataclass(frozen=True, slots=True)
class RequestsJudged:
    """The requests around one spike (its baseline, the spike and the margin after it) and
    how many of them the causes were judged on: all of them, or a sample (REQUEST_BUDGET)."""

    judged: int
    total: int

    @property
    def sampled(self) -> bool:
        return self.judged < self.total


@dataclass(frozen=True, slots=True)
class AnalyzedSpike:
    spike: Spike
    ranking: Ranking
    instances: tuple[InstanceRise, ...] = ()  # per instance, largest rise first (localise.py)
    stages: tuple[StageChange, ...] = ()  # time per request by stage, baseline vs spike
    slowest: tuple[RequestRow, ...] = ()  # the spike's slowest requests, slowest first
    requests: RequestsJudged | None = None  # how many requests the causes were judged on


@dataclass(frozen=True, slots=True)
class SpikeReport:
    query: SpikeQuery
    status: str  # "ok" or "insufficient_data"
    detection: Detection
    spikes: tuple[AnalyzedSpike, ...]  # by start
    notices: tuple[str, ...]
    truncated: int = 0  # spikes detected but not analysed (beyond MAX_SPIKES)
    # what the detector's percentiles were computed from: "raw" requests, or the latency
    # sketches' resolution ("10s", each within 1%) for a long window
    resolution: str = "raw"


def buckets(points: Sequence[QuantilePoint]) -> list[Bucket]:
    """The detector's input: one percentile of each latency step."""
    return [Bucket(p.start_ns, p.end_ns, p.latency_ms, p.count) for p in points]


def _series(query: SpikeQuery, route: str | None = None) -> SeriesQuery:
    cfg = query.config
    return SeriesQuery(query.service, query.start_ns - cfg.baseline_ns, query.end_ns,
                       cfg.step_ns, route=route)


def _detect_all(store: Store, query: SpikeQuery) -> tuple[Detection, list[Spike], str]:
    cfg = query.config
    points, routes, resolution = store.latency_quantile(_series(query), cfg.percentile)
    whole = detect(buckets(points), cfg, query.start_ns)
    spikes = list(whole.spikes)
    if len(routes) >= 2:
        # the requests without a route are no route of their own: their series adds nothing
        for series in (r for r in routes[:MAX_ROUTES] if r.route is not None):
            for s in detect(buckets(series.points), cfg, query.start_ns, series.route).spikes:
                if not any(w.start_ns < s.end_ns and s.start_ns < w.end_ns for w in whole.spikes):
                    spikes.append(s)
    return whole, spikes, resolution


def analyze(store: Store, query: SpikeQuery) -> SpikeReport:
    """Detect spikes in the query's window and rank each one's causes."""
    detection, spikes, resolution = _detect_all(store, query)
    chosen = sorted(sorted(spikes, key=lambda s: -s.z)[:MAX_SPIKES], key=lambda s: s.start_ns)
    series = _series(query)
    listing = store.events(query.service, series.start_ns, query.end_ns + REQUEST_MARGIN_NS)
    events = tuple(EventInfo(e.time_ns, e.kind, e.version, e.previous_version)
                   for e in listing.events)
    analysed = []
    replayed = False
    with ThreadPoolExecutor(READERS, thread_name_prefix="spike-read") as pool:
        for spike in chosen:
            excluded = tuple((s.start_ns, s.end_ns) for s in spikes
                             if s.route == spike.route and s.start_ns < spike.start_ns)
            ctx, where, stages, slowest, tally, judged = _context(store, query, spike, excluded,
                                                                  events, pool)
            replayed = replayed or any(g.replayed for g in ctx.gpu)
            analysed.append(AnalyzedSpike(ctx.spike, rank(ctx), where.rises, stages, slowest,
                                          RequestsJudged(judged, tally.total)))
    notices = (REPLAYED_NOTICE,) if replayed else ()
    return SpikeReport(query, detection.status, detection, tuple(analysed), notices,
                       len(spikes) - len(chosen), resolution)


def _context(store: Store, query: SpikeQuery, spike: Spike,
             excluded: tuple[tuple[Nanos, Nanos], ...], events: tuple[EventInfo, ...],
             pool: ThreadPoolExecutor
             ) -> tuple[SpikeContext, Localisation, tuple[StageChange, ...],
                        tuple[RequestRow, ...], RequestTally, int]:
    """What the scorers judge one spike by; when one instance carries the spike, that
    instance's requests, profiles, processes, host and GPUs only (localise.py), since a
    healthy rest of the fleet dilutes every signal of the one that broke.

    Requests and GPU readings beyond their budgets are a deterministic sample (see
    REQUEST_BUDGET); every count, the onset, the localisation and the slowest requests
    come from the store over all of them. Once the instance is known, the reads run on
    `pool` side by side (READERS).
    """
    cfg = query.config
    base_start = spike.start_ns - cfg.baseline_ns
    read_end = spike.end_ns + REQUEST_MARGIN_NS
    where = localise(store.instance_latency(
        query.service, (base_start, spike.start_ns), (spike.start_ns, spike.end_ns),
        QUANTILES[cfg.percentile], route=spike.route))
    instance = where.instance
    if instance is not None:
        spike = replace(spike, instance=instance)
    # the earlier spikes inside this one's baseline (the detector left them out of it)
    inside_baseline = tuple((lo, hi) for lo, hi in excluded
                            if hi > base_start and lo < spike.start_ns)
    # the onset: the end of the first request of the spike's first step slower than the
    # threshold it crossed, the first moment the slowdown was seen (its cause lies at or
    # before it); none that slow keeps the step's start
    tally_read = pool.submit(
        store.request_tally, query.service, base_start, read_end,
        spike=(spike.start_ns, spike.end_ns), baseline_start_ns=base_start, step_ns=cfg.step_ns,
        slow_ns=math.floor(spike.threshold_ms * 1_000_000), route=spike.route, instance=instance,
        excluded=inside_baseline)
    spike_read = pool.submit(store.profile, query.service, spike.start_ns, spike.end_ns,
                             instance=instance)
    # the baseline's profile leaves out earlier spikes, as its latency and its request
    # count do: a code path that came and went and came again is judged against the
    # time it was off, not partly against itself
    base_reads = [pool.submit(store.profile, query.service, lo, hi, instance=instance)
                  for lo, hi in baseline_parts(base_start, spike.start_ns, inside_baseline)]
    # the requests are read in the unit most of them carry, which the tally counts; the
    # largest read, so it goes before the rest are queued
    tally = tally_read.result()
    unit = size_unit(tally)
    requests_read = pool.submit(store.request_samples, query.service, base_start, read_end,
                                unit=unit, route=spike.route, instance=instance,
                                budget=REQUEST_BUDGET)
    gpus_read = pool.submit(store.gpu_readings, query.service, base_start, spike.end_ns,
                            instance=instance, budget=GPU_BUDGET)
    engine_read = pool.submit(store.engine_steps, query.service, base_start, spike.end_ns,
                              origin_ns=spike.start_ns, step_ns=cfg.step_ns, instance=instance)
    slowest_read = pool.submit(store.slowest_requests, query.service, spike.start_ns,
                               spike.end_ns, limit=SLOWEST, route=spike.route, instance=instance)
    series = replace(_series(query), instance=instance)
    resources_read = pool.submit(_resources, store, series, base_start, spike.end_ns)
    if tally.first_slow_ns is not None:
        spike = replace(spike, onset_ns=tally.first_slow_ns)
    version_reads = {
        version: (pool.submit(store.profile, query.service, spike.start_ns, spike.end_ns,
                              version=version, instance=instance), n)
        for version, n in sorted(tally.versions.items(), key=lambda kv: -kv[1])[:MAX_VERSIONS]
    } if len(tally.versions) > 1 else {}
    requests = requests_read.result()
    spike_profile = spike_read.result()
    base_profile = merge([read.result() for read in base_reads], base_start, spike.start_ns) \
        if base_reads else Profile(query.service, base_start, spike.start_ns, ())
    versions = {version: (read.result(), n) for version, (read, n) in version_reads.items()}
    # the profiles share most stacks, and the last analysis saw most of them (FACTS): each
    # stack is classified, and its functions found, once
    with FACTS.lock:
        FACTS.trim()
        classified, profiles = FACTS.classified(query.stage_rules), FACTS.profiles
        stages = compare(
            split(base_profile.samples, tally.baseline, base_profile.rate_hz, query.stage_rules,
                  classified),
            split(spike_profile.samples, tally.inside, spike_profile.rate_hz, query.stage_rules,
                  classified))
        code = (profiles.of(spike_profile, tally.inside),
                profiles.of(base_profile, tally.baseline),
                {version: profiles.of(profile, n) for version, (profile, n) in versions.items()})
    return SpikeContext(
        spike=spike, step_ns=cfg.step_ns, baseline_start_ns=base_start,
        percentile=cfg.percentile, size_unit=unit, excluded=excluded,
        requests=tuple(requests), gpu=gpu_samples(gpus_read.result()),
        resources=resources_read.result(), events=events,
        spike_profile=code[0], baseline_profile=code[1], version_profiles=code[2],
        engine=tuple(engine_read.result()), arrived=tally.began, completed=tally.ended,
    ), where, stages, tuple(slowest_read.result()), tally, len(requests)


def baseline_parts(start_ns: Nanos, end_ns: Nanos,
                   excluded: Sequence[tuple[Nanos, Nanos]]) -> list[tuple[Nanos, Nanos]]:
    """[start_ns, end_ns) less the excluded intervals, as the disjoint windows left, in
    time order (the whole span when nothing excluded falls in it)."""
    parts, at = [], start_ns
    for lo, hi in sorted(excluded):
        if hi <= at or lo >= end_ns:
            continue
        if lo > at:
            parts.append((at, lo))
        at = max(at, hi)
    if at < end_ns:
        parts.append((at, end_ns))
    return parts


def _resources(store: Store, series: SeriesQuery, start_ns: Nanos, end_ns: Nanos
               ) -> tuple[ResourcePoint, ...]:
    """The process and host points of `series` whose step starts in [start_ns, end_ns).

    Reads only those steps, on the whole window's grid, so each point holds exactly the
    rows it would in the whole series: a day's series is read in seconds, a spike's
    steps in milliseconds.
    """
    step, origin = series.step_ns, series.start_ns
    first = origin + max(0, -(-(start_ns - origin) // step)) * step
    end = min(series.end_ns, origin + -(-(end_ns - origin) // step) * step)
    if first >= end:
        return ()
    part = replace(series, start_ns=first, end_ns=end)
    return resource_points(store.process(part), store.host(part), step / NANOS_PER_SECOND)
