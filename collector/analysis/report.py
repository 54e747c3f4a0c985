"""A SpikeReport as the API's JSON and as the short text `pyrometer spikes` prints.

The JSON keeps the contract's names (an evaluation harness reads them): per spike its
times, peak, baseline, z and route, the instance that alone carries it (null: several or
one instance only) with every instance's own rise, the time per request of each
pipeline stage in the baseline and the spike with a one-line summary (stages.py), its
slowest requests with their trace ids (and links, given a URL template), its
causes best first with score, z, explanation and evidence, whether it is unexplained,
and what every candidate saw ("checked").
"""

from __future__ import annotations

import math
from typing import Any

from pyrometer.collector.analysis.candidate import Cause
from pyrometer.collector.analysis.gather import AnalyzedSpike, SpikeReport
from pyrometer.collector.analysis.stages import summary
from pyrometer.collector.storage.reads import RequestRow
from pyrometer.collector.timeparse import format_duration, format_time


def _finite(x: float, digits: int = 3) -> float:
    return 0.0 if math.isnan(x) or math.isinf(x) else round(x, digits)


def _cause(cause: Cause) -> dict[str, Any]:
    return {"kind": cause.kind, "score": _finite(cause.score), "z": _finite(cause.z, 2),
            "explanation": cause.explanation, "evidence": dict(cause.evidence)}


def request_json(row: RequestRow, trace_url: str = "") -> dict[str, Any]:
    """One request as the API lists it; its trace id becomes a link with `trace_url`."""
    url = trace_url.replace("{trace_id}", row.trace_id) if trace_url and row.trace_id else None
    return {"end": format_time(row.time_ns), "end_ns": row.time_ns,
            "latency_ms": _finite(row.latency_ns / 1e6), "route": row.route,
            "instance": row.instance, "version": row.version, "status": row.status,
            "trace_id": row.trace_id, "trace_url": url}


def _spike(item: AnalyzedSpike, trace_url: str = "") -> dict[str, Any]:
    s, ranking = item.spike, item.ranking
    return {
        "start": format_time(s.start_ns), "end": format_time(s.end_ns),
        "start_ns": s.start_ns, "end_ns": s.end_ns, "onset": format_time(s.onset_ns),
        "onset_ns": s.onset_ns, "peak_ns": s.peak_ns, "peak_ms": _finite(s.peak_ms),
        "baseline_ms": _finite(s.baseline_ms), "baseline_mad_ms": _finite(s.baseline_mad_ms),
        "threshold_ms": _finite(s.threshold_ms), "z": _finite(s.z, 2), "route": s.route,
        "instance": s.instance,
        "instances": [{"instance": r.instance, "baseline_ms": _finite(r.baseline_ms),
                       "spike_ms": _finite(r.spike_ms), "ratio": _finite(r.ratio),
                       "baseline_requests": r.baseline_requests,
                       "spike_requests": r.spike_requests} for r in item.instances],
        "stages": [{"stage": c.stage, "baseline_ms_per_request": _finite(c.baseline_ms),
                    "spike_ms_per_request": _finite(c.spike_ms),
                    "baseline_share": _finite(c.baseline_share),
                    "spike_share": _finite(c.spike_share)} for c in item.stages],
        "stages_summary": summary(item.stages) if item.stages else "",
        "slowest_requests": [request_json(r, trace_url) for r in item.slowest],
        # what the causes were judged on: every request around the spike, or a sample of a
        # large fleet's (counts, rates, onset and the slowest are of all of them)
        "requests": None if item.requests is None else {
            "judged": item.requests.judged, "total": item.requests.total,
            "sampled": item.requests.sampled},
        "causes": [_cause(c) for c in ranking.causes],
        "unexplained": ranking.unexplained,
        "checked": [{"kind": c.kind, "score": _finite(c.score), "z": _finite(c.z, 2),
                     "note": c.note or c.explanation} for c in ranking.checked],
    }


def message(report: SpikeReport) -> str:
    """One line on what was found, or why nothing could be."""
    cfg = report.query.config
    det = report.detection
    if report.status != "ok":
        return (f"too little data for a baseline: no bucket had {cfg.needed_baseline_buckets} "
                f"steps of {format_duration(cfg.step_ns)} with >= {cfg.min_count} requests in the "
                f"{format_duration(cfg.baseline_ns)} before it; record longer or pass a shorter "
                "baseline")
    found = f"{len(report.spikes)} spike{'s' if len(report.spikes) != 1 else ''} in " \
            f"{det.evaluated} buckets checked"
    if det.without_baseline:
        found += f"; {det.without_baseline} buckets had too little data before them for a baseline"
    if report.truncated:
        found += f"; {report.truncated} smaller spikes not analysed"
    if report.resolution != "raw":
        found += (f"; percentiles from {report.resolution} latency sketches (within 1%), "
                  "each spike's causes from its requests")
    return found


def to_json(report: SpikeReport, trace_url: str = "") -> dict[str, Any]:
    """The answer; `trace_url` (e.g. "https://tempo.example/trace/{trace_id}") turns the
    slowest requests' trace ids into links."""
    q = report.query
    cfg = q.config
    return {
        "service": q.service, "from": format_time(q.start_ns), "to": format_time(q.end_ns),
        "from_ns": q.start_ns, "to_ns": q.end_ns, "step": format_duration(cfg.step_ns),
        "step_ns": cfg.step_ns, "baseline": format_duration(cfg.baseline_ns),
        "baseline_ns": cfg.baseline_ns, "percentile": cfg.percentile,
        "resolution": report.resolution, "status": report.status,
        "message": message(report), "spikes": [_spike(s, trace_url) for s in report.spikes],
        "notices": list(report.notices),
    }
