"""Pyroscope's query API (`querier.v1.QuerierService`) over Pyrometer's samples, for
Grafana's built-in "Grafana Pyroscope" data source pointed at the collector's HTTP URL.

Served as Connect unary calls at `/querier.v1.QuerierService/<Method>`, in binary protobuf
and JSON: ProfileTypes, LabelNames, LabelValues, Series, SelectMergeStacktraces and
SelectSeries. Every other method of the service answers Connect's `unimplemented`
(HTTP 501). Pyrometer's samples are offered as two profile types of one profile,
`process_cpu`: samples (`process_cpu:samples:count:cpu:nanoseconds`, the counts
/api/v1/flamegraph shows) and CPU time (`process_cpu:cpu:nanoseconds:cpu:nanoseconds`,
each sample worth its window's period). Times are milliseconds since the epoch.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

from aiohttp import web

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.api import pyroscope_selector as selector
from pyrometer.collector.api.params import STORE, run_query
from pyrometer.collector.api.pyroscope_connect import ConnectError, error_response, unary, unimplemented
from pyrometer.collector.model import Profile
from pyrometer.collector.query.tree import build_tree
from pyrometer.collector.render.flamebearer import flamebearer
from pyrometer.collector.storage.label_sets import LabelSet
from pyrometer.proto import pyroscope_types_pb2 as types_pb2
from pyrometer.proto import querier_pb2

PREFIX = "/querier.v1.QuerierService/"
SAMPLES_TYPE, CPU_TYPE, PROFILE_TYPES = selector.SAMPLES_TYPE, selector.CPU_TYPE, selector.PROFILE_TYPES
DEFAULT_RANGE_MS = 3600 * 1000  # a request without times: the last hour, as Pyroscope's ingesters hold
MAX_STEPS = 11_000  # Prometheus' own bound on points per series
_MS = 1_000_000
UNSUPPORTED = {
    "SelectMergeSpanProfile": "profiles are not split by trace span",
    "SelectMergeProfile": "use SelectMergeStacktraces, or /api/v1/flamegraph?format=pprof",
    "SelectHeatmap": "no per-profile exemplars are kept",
    "Diff": "use /api/v1/flamegraph/diff",
    "GetProfileStats": "not needed by the Grafana data source",
    "AnalyzeQuery": "not needed by the Grafana data source",
}


def setup(app: web.Application) -> None:
    """Serve the supported calls, and `unimplemented` for every other one of the service."""
    calls = {
        "ProfileTypes": unary(querier_pb2.ProfileTypesRequest, profile_types),
        "LabelNames": unary(types_pb2.LabelNamesRequest, label_names),
        "LabelValues": unary(types_pb2.LabelValuesRequest, label_values),
        "Series": unary(querier_pb2.SeriesRequest, series),
        "SelectMergeStacktraces": unary(querier_pb2.SelectMergeStacktracesRequest, select_merge_stacktraces),
        "SelectSeries": unary(querier_pb2.SelectSeriesRequest, select_series),
    }
    for method, handler in calls.items():
        app.router.add_post(PREFIX + method, handler)
    for method, why in UNSUPPORTED.items():
        app.router.add_post(PREFIX + method, unimplemented(PREFIX + method, why))
    app.router.add_post(PREFIX + "{method}", _unknown)


async def _unknown(request: web.Request) -> web.StreamResponse:
    method = request.match_info["method"][:64]
    return error_response(ConnectError("unimplemented", f"querier.v1.QuerierService/{method} is not "
                                                        "a method Pyrometer knows"))


def _window(start_ms: int, end_ms: int) -> tuple[Nanos, Nanos]:
    end_ms = end_ms if end_ms > 0 else time.time_ns() // _MS
    start_ms = start_ms if start_ms > 0 else end_ms - DEFAULT_RANGE_MS
    if not 0 <= start_ms < end_ms < 2**63 // _MS:
        raise ConnectError("invalid_argument", f"start {start_ms} must be before end {end_ms} "
                                               "(milliseconds since the epoch)")
    return start_ms * _MS, end_ms * _MS


def _matchers(selectors: Iterable[str]) -> list[list[selector.Matcher]]:
    try:
        parsed = [selector.parse_selector(s) for s in selectors]
    except selector.SelectorError as exc:
        raise ConnectError("invalid_argument", str(exc)) from None
    return parsed or [[]]


async def _sets(request: web.Request, start_ns: Nanos, end_ns: Nanos,
                alternatives: list[list[selector.Matcher]]) -> list[LabelSet]:
    """Label sets with samples in the window that any of the selectors matches."""
    found = await run_query(request, "pyroscope_labels", request.app[STORE].label_sets, start_ns, end_ns)
    return [s.label_set for s in found
            if any(selector.matches(selector.pyroscope_labels(s.label_set), m) for m in alternatives)]


def _scale(type_id: str) -> bool | None:
    """True for CPU nanoseconds, False for sample counts, None for a type Pyrometer has not."""
    parts = type_id.split(":")
    if len(parts) != 5 or not parts[0]:
        raise ConnectError("invalid_argument", f"profile type {type_id[:64]!r} is not "
                                               "name:sample_type:sample_unit:period_type:period_unit")
    return {SAMPLES_TYPE: False, CPU_TYPE: True}.get(type_id)


async def profile_types(request: web.Request, msg: querier_pb2.ProfileTypesRequest
                        ) -> querier_pb2.ProfileTypesResponse:
    start, end = _window(msg.start, msg.end)
    answer = querier_pb2.ProfileTypesResponse()
    if await _sets(request, start, end, [[]]):
        for type_id in PROFILE_TYPES:
            name, sample_type, sample_unit, period_type, period_unit = type_id.split(":")
            answer.profile_types.add(ID=type_id, name=name, sample_type=sample_type, sample_unit=sample_unit,
                                     period_type=period_type, period_unit=period_unit)
    return answer


async def label_names(request: web.Request, msg: types_pb2.LabelNamesRequest) -> types_pb2.LabelNamesResponse:
    start, end = _window(msg.start, msg.end)
    names = {name for s in await _sets(request, start, end, _matchers(msg.matchers))
             for name in selector.pyroscope_labels(s)}
    return types_pb2.LabelNamesResponse(names=sorted(names))


async def label_values(request: web.Request, msg: types_pb2.LabelValuesRequest
                       ) -> types_pb2.LabelValuesResponse:
    if not msg.name:
        raise ConnectError("invalid_argument", "name (the label whose values to list) is required")
    start, end = _window(msg.start, msg.end)
    values = {selector.pyroscope_labels(s).get(msg.name, "")
              for s in await _sets(request, start, end, _matchers(msg.matchers))}
    return types_pb2.LabelValuesResponse(names=sorted(values - {""}))


async def series(request: web.Request, msg: querier_pb2.SeriesRequest) -> querier_pb2.SeriesResponse:
    start, end = _window(msg.start, msg.end)
    wanted = set(msg.label_names)
    seen: set[tuple[tuple[str, str], ...]] = set()
    for found in await _sets(request, start, end, _matchers(msg.matchers)):
        labels = selector.pyroscope_labels(found)
        seen.add(tuple(sorted((k, v) for k, v in labels.items() if not wanted or k in wanted)))
    answer = querier_pb2.SeriesResponse()
    for pairs in sorted(seen):
        answer.labels_set.add().labels.extend(types_pb2.LabelPair(name=k, value=v) for k, v in pairs)
    return answer


async def select_merge_stacktraces(request: web.Request, msg: querier_pb2.SelectMergeStacktracesRequest
                                   ) -> querier_pb2.SelectMergeStacktracesResponse:
    if msg.format == querier_pb2.PROFILE_FORMAT_TREE:
        raise ConnectError("unimplemented", "format PROFILE_FORMAT_TREE is not supported; ask for "
                                            "the flame graph (PROFILE_FORMAT_FLAMEGRAPH)")
    if msg.HasField("stack_trace_selector") or msg.profile_id_selector:
        raise ConnectError("unimplemented", "stack_trace_selector and profile_id_selector are not supported")
    in_ns = _scale(msg.profile_typeID)
    start, end = _window(msg.start, msg.end)
    sets = await _sets(request, start, end, _matchers([msg.label_selector])) if in_ns is not None else []
    profile = await run_query(request, "pyroscope_flamegraph", request.app[STORE].select_profile,
                              start, end, sets)
    if not profile.samples:
        return querier_pb2.SelectMergeStacktracesResponse()
    scale = profile.period_ns if in_ns else 1
    graph = await run_query(request, "pyroscope_flamegraph_render", _render, profile, scale,
                            msg.max_nodes if msg.HasField("max_nodes") else 0)
    return querier_pb2.SelectMergeStacktracesResponse(flamegraph=graph)


def _render(profile: Profile, scale: int, max_nodes: int) -> querier_pb2.FlameGraph:
    laid = flamebearer(build_tree(profile), scale=scale, max_nodes=max(0, max_nodes))
    return querier_pb2.FlameGraph(names=laid.names, total=laid.total, max_self=laid.max_self,
                                  levels=[querier_pb2.Level(values=level) for level in laid.levels])


async def select_series(request: web.Request, msg: querier_pb2.SelectSeriesRequest
                        ) -> querier_pb2.SelectSeriesResponse:
    if msg.HasField("aggregation") and msg.aggregation != types_pb2.TIME_SERIES_AGGREGATION_TYPE_SUM:
        raise ConnectError("unimplemented", "only the sum aggregation is supported")
    if msg.HasField("stack_trace_selector"):
        raise ConnectError("unimplemented", "stack_trace_selector is not supported")
    if not msg.step > 0:
        raise ConnectError("invalid_argument", "step (seconds) must be positive")
    in_ns = _scale(msg.profile_typeID)
    start, end = _window(msg.start, msg.end)
    step_ns = max(1, round(msg.step * 1e9))
    if (end - start) / step_ns > MAX_STEPS:
        raise ConnectError("invalid_argument", f"more than {MAX_STEPS} steps; use a longer step")
    sets = await _sets(request, start, end, _matchers([msg.label_selector])) if in_ns is not None else []
    steps = await run_query(request, "pyroscope_series", request.app[STORE].select_steps,
                            start, end, step_ns, sets)
    groups: dict[tuple[tuple[str, str], ...], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for point in steps:
        labels = selector.pyroscope_labels(sets[point.set_index])
        key = tuple((name, labels[name]) for name in msg.group_by if labels.get(name))
        groups[key][point.step_start_ns] += point.cpu_ns if in_ns else point.samples
    ranked = sorted(groups.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    if msg.HasField("limit") and msg.limit > 0:
        ranked = ranked[:msg.limit]
    answer = querier_pb2.SelectSeriesResponse()
    for key, points in sorted(ranked):
        added = answer.series.add()
        added.labels.extend(types_pb2.LabelPair(name=k, value=v) for k, v in key)
        added.points.extend(types_pb2.Point(value=v, timestamp=t // _MS) for t, v in sorted(points.items()))
    return answer
