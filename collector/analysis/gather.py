"""The thin shell around detection and scoring: read a Store, call the pure core.

`analyze` reads the latency series from `baseline` before `from` to `to` (so the
first buckets have a baseline too), detects spikes service-wide and per route (a
route's spike inside a service-wide one adds nothing and is left out), and for each
spike reads what its baseline and the spike hold: request records, GPU readings,
process and host points (of those steps only), events and the two profiles, which the
scorers then rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.analysis.causes import Ranking, rank
from pyrometer.collector.analysis.detect import Bucket, DetectConfig, Detection, Spike, detect, refine_onset
from pyrometer.collector.analysis.evidence import EngineSample, EventInfo, ResourcePoint, SpikeContext
from pyrometer.collector.analysis.inputs import (
    code_profile,
    gpu_samples,
    request_samples,
    resource_points,
    size_unit,
)
from pyrometer.collector.analysis.localise import InstanceRise, localise
from pyrometer.collector.analysis.stages import DEFAULT_RULES, StageChange, StageRule, compare, split
from pyrometer.collector.storage.reads import REPLAYED_NOTICE, QuantilePoint, RequestRow, SeriesQuery
from pyrometer.collector.storage.store import Store

MAX_SPIKES = 20  # analysed per answer, the largest by z
MAX_ROUTES = 5  # the busiest routes get their own series
MAX_VERSIONS = 3  # versions inside a spike that get their own profile
SLOWEST = 5  # the spike's slowest requests listed, with their trace ids
REQUEST_MARGIN_NS = 60 * NANOS_PER_SECOND  # requests that began in the spike end later


@dataclass(frozen=True, slots=True)
class SpikeQuery:
    service: str
    start_ns: Nanos
    end_ns: Nanos
    config: DetectConfig
    stage_rules: tuple[StageRule, ...] = DEFAULT_RULES


@dataclass(frozen=True, slots=True)
class AnalyzedSpike:
    spike: Spike
    ranking: Ranking
    instances: tuple[InstanceRise, ...] = ()  # per instance, largest rise first (localise.py)
    stages: tuple[StageChange, ...] = ()  # time per request by stage, baseline vs spike
    slowest: tuple[RequestRow, ...] = ()  # the spike's slowest requests, slowest first


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
    for spike in chosen:
        excluded = tuple((s.start_ns, s.end_ns) for s in spikes
                         if s.route == spike.route and s.start_ns < spike.start_ns)
        ctx, rises, stages, slowest = _context(store, query, spike, excluded, events)
        replayed = replayed or any(g.replayed for g in ctx.gpu)
        analysed.append(AnalyzedSpike(ctx.spike, rank(ctx), rises, stages, slowest))
    notices = (REPLAYED_NOTICE,) if replayed else ()
    return SpikeReport(query, detection.status, detection, tuple(analysed), notices,
                       len(spikes) - len(chosen), resolution)


def _context(store: Store, query: SpikeQuery, spike: Spike,
             excluded: tuple[tuple[Nanos, Nanos], ...], events: tuple[EventInfo, ...]
             ) -> tuple[SpikeContext, tuple[InstanceRise, ...], tuple[StageChange, ...],
                        tuple[RequestRow, ...]]:
    """What the scorers judge one spike by; when one instance carries the spike, that
    instance's requests, profiles, processes, host and GPUs only (localise.py), since a
    healthy rest of the fleet dilutes every signal of the one that broke."""
    cfg = query.config
    base_start = spike.start_ns - cfg.baseline_ns
    rows = store.request_records(query.service, base_start, spike.end_ns + REQUEST_MARGIN_NS,
                                 route=spike.route)
    where = localise(rows, (base_start, spike.start_ns), (spike.start_ns, spike.end_ns),
                     cfg.percentile)
    instance = where.instance
    if instance is not None:
        rows = [r for r in rows if r.instance == instance]
        spike = replace(spike, instance=instance)
    unit = size_unit(rows)
    requests = request_samples(rows, unit)
    spike = refine_onset(spike, [r.end_ns for r in requests],
                         [r.latency_ms for r in requests], cfg.step_ns)
    inside = [r for r in requests if spike.start_ns <= r.end_ns < spike.end_ns]
    before = sum(1 for r in requests if base_start <= r.end_ns < spike.start_ns)
    spike_profile = store.profile(query.service, spike.start_ns, spike.end_ns, instance=instance)
    base_profile = store.profile(query.service, base_start, spike.start_ns, instance=instance)
    counts: dict[str, int] = {}
    for r in inside:
        counts[r.version] = counts.get(r.version, 0) + 1
    versions = {}
    if len(counts) > 1:
        for version, n in sorted(counts.items(), key=lambda kv: -kv[1])[:MAX_VERSIONS]:
            profile = store.profile(query.service, spike.start_ns, spike.end_ns, version=version,
                                    instance=instance)
            versions[version] = code_profile(profile, n)
    stages = compare(split(base_profile.samples, before, base_profile.rate_hz, query.stage_rules),
                     split(spike_profile.samples, len(inside), spike_profile.rate_hz,
                           query.stage_rules))
    gpus = [g for g in store.gpu_readings(query.service, base_start, spike.end_ns)
            if instance is None or g.instance == instance]
    series = replace(_series(query), instance=instance)
    engine = tuple(EngineSample(e.time_ns, e.metric, e.value, e.count, e.engine, e.model)
                   for e in store.engine_readings(query.service, base_start, spike.end_ns)
                   if instance is None or e.instance == instance)
    return SpikeContext(
        spike=spike, step_ns=cfg.step_ns, baseline_start_ns=base_start,
        percentile=cfg.percentile, size_unit=unit, excluded=excluded, requests=requests,
        gpu=gpu_samples(gpus), resources=_resources(store, series, base_start, spike.end_ns),
        events=events, spike_profile=code_profile(spike_profile, len(inside)),
        baseline_profile=code_profile(base_profile, before), version_profiles=versions,
        engine=engine,
    ), where.rises, stages, _slowest(rows, spike)


def _slowest(rows: Sequence[RequestRow], spike: Spike) -> tuple[RequestRow, ...]:
    """The spike's slowest requests (ended inside it), slowest first; the ones with a
    trace id first among equals, since a trace is what the reader will open next."""
    inside = [r for r in rows if spike.start_ns <= r.time_ns < spike.end_ns]
    inside.sort(key=lambda r: (-r.latency_ns, r.trace_id is None, r.time_ns))
    return tuple(inside[:SLOWEST])


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
