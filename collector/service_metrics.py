"""Per-service figures on /metrics, for the dashboards and alerts people already have.

Beside the collector's own internals, what a Prometheus user asks of a profiler that
sees every request and every GPU reading, updated as batches are stored:

    pyrometer_requests_total{service, route, code}              counter ("2xx".."5xx")
    pyrometer_request_duration_seconds{service, route}          histogram
    pyrometer_gpu_sm_clock_ratio{service, service_instance, gpu}    gauge, SM clock / max
    pyrometer_gpu_temperature_celsius{service, service_instance, gpu}
    pyrometer_gpu_throttle_active{service, service_instance, gpu, reason}  1 or 0
    pyrometer_gpu_replayed{service, service_instance, gpu}      1: the readings are a
                                                                 recording, not a GPU
    pyrometer_spikes_total{service, top_cause}                  spikes the alert watcher
                                                                 found (--alerts)

Label names never collide with the ones Prometheus sets itself: the model server's
instance is `service_instance`, never `instance` or `job` (which Prometheus gives the
collector's own scrape target; a clash would arrive renamed as `exported_instance`).

Cardinality is bounded: at most `max_services` services, `max_routes` routes per
service (later ones count under route="other"), status codes folded into classes, and
GPU series dropped when not refreshed for `max_age_ns`, at most `max_gpus` of them.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pyrometer.agent.shared.clock_events import CLOCK_EVENT_REASONS, SLOWDOWN_REASONS
from pyrometer.agent.shared.model import NANOS_PER_SECOND, GpuReading, Nanos, RequestRecord
from pyrometer.collector.storage.batch import Columns

# seconds: from a cache hit to a long generation
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OTHER_ROUTE = "other"


@dataclass
class _RouteStats:
    codes: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total_s: float = 0.0
    count: int = 0


@dataclass(frozen=True, slots=True)
class _Gpu:
    reading: GpuReading
    seen_ns: Nanos


def _newest_per_gpu(gpus: Columns[GpuReading]) -> list[GpuReading]:
    """Each GPU's newest reading of a batch (the later one of equal times): the only
    ones the gauges can keep, so only they are built as records."""
    newest: dict[int, int] = {}
    times = gpus.column("time_ns")
    for i, index in enumerate(gpus.column("index")):
        if index not in newest or times[i] >= times[newest[index]]:
            newest[index] = i
    return [gpus[i] for i in newest.values()]  # in the order each GPU first appears


class ServiceMetrics(Collector):
    """Request and GPU figures per service, as Prometheus families. Thread-safe."""

    def __init__(self, *, max_services: int = 200, max_routes: int = 50, max_gpus: int = 2000,
                 max_age_ns: Nanos = 3600 * NANOS_PER_SECOND,
                 clock: Callable[[], Nanos] = time.time_ns) -> None:
        self._max_services = max_services
        self._max_routes = max_routes
        self._max_gpus = max_gpus
        self._max_age_ns = max_age_ns
        self._clock = clock
        self._lock = threading.Lock()
        self._routes: dict[str, dict[str, _RouteStats]] = {}
        self._gpus: dict[tuple[str, str, str], _Gpu] = {}
        self._spikes: dict[tuple[str, str], int] = {}
        self.services_dropped = 0  # requests of services past max_services, not counted

    def observe(self, service: str, instance: str, requests: Sequence[RequestRecord],
                gpus: Sequence[GpuReading]) -> None:
        """Count one stored batch's requests and keep its newest reading of each GPU."""
        rows = Columns.of(RequestRecord, requests)  # by column: no record built per request
        newest = _newest_per_gpu(Columns.of(GpuReading, gpus))
        now = self._clock()
        with self._lock:
            routes = self._routes.get(service)
            if routes is None:
                if len(self._routes) >= self._max_services:
                    self.services_dropped += 1
                    routes = None
                else:
                    routes = self._routes[service] = {}
            if routes is not None:
                for route, status, latency_ns in zip(rows.column("route"), rows.column("status"),
                                                      rows.column("latency_ns"), strict=True):
                    self._count(routes, route, status, latency_ns)
            for g in newest:
                key = (service, instance, str(g.index))
                held = self._gpus.get(key)
                if held is not None and held.reading.time_ns > g.time_ns:
                    continue  # a late, spooled reading must not roll the gauges back
                if held is None and len(self._gpus) >= self._max_gpus:
                    del self._gpus[min(self._gpus, key=lambda k: self._gpus[k].seen_ns)]
                self._gpus[key] = _Gpu(g, now)

    def spike(self, service: str, top_cause: str) -> None:
        with self._lock:
            if len(self._spikes) < self._max_services * 8 or (service, top_cause) in self._spikes:
                self._spikes[(service, top_cause)] = self._spikes.get((service, top_cause), 0) + 1

    def _count(self, routes: dict[str, _RouteStats], route: str, status: int,
               latency_ns: int) -> None:
        route = route if route in routes or len(routes) < self._max_routes else OTHER_ROUTE
        stats = routes.setdefault(route, _RouteStats())
        code = f"{status // 100}xx" if 100 <= status < 600 else "other"
        stats.codes[code] = stats.codes.get(code, 0) + 1
        seconds = latency_ns / NANOS_PER_SECOND
        stats.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        stats.total_s += seconds
        stats.count += 1

    def describe(self) -> Iterable[Metric]:
        return list(self._families({}, {}, {}))

    def collect(self) -> Iterator[Metric]:
        cutoff = self._clock() - self._max_age_ns
        with self._lock:
            for key in [k for k, g in self._gpus.items() if g.seen_ns < cutoff]:
                del self._gpus[key]
            routes = {s: {r: _copy(st) for r, st in rs.items()} for s, rs in self._routes.items()}
            gpus = {k: g.reading for k, g in self._gpus.items()}
            spikes = dict(self._spikes)
        yield from self._families(routes, gpus, spikes)

    def _families(self, routes: dict[str, dict[str, _RouteStats]],
                  gpus: dict[tuple[str, str, str], GpuReading],
                  spikes: dict[tuple[str, str], int]) -> Iterator[Metric]:
        requests = CounterMetricFamily("pyrometer_requests", "Requests the agents reported, by "
                                       "status class", labels=("service", "route", "code"))
        latency = HistogramMetricFamily("pyrometer_request_duration_seconds",
                                        "Request latency as the agents measured it",
                                        labels=("service", "route"))
        for service, by_route in sorted(routes.items()):
            for route, st in sorted(by_route.items()):
                for code, n in sorted(st.codes.items()):
                    requests.add_metric([service, route, code], n)
                cumulative, running = [], 0
                for bound, n in zip((*map(str, BUCKETS), "+Inf"), st.buckets, strict=True):
                    running += n
                    cumulative.append((bound, running))
                latency.add_metric([service, route], cumulative, st.total_s)
        yield requests
        yield latency
        gpu_labels = ("service", "service_instance", "gpu")
        ratio = GaugeMetricFamily("pyrometer_gpu_sm_clock_ratio", "SM clock over its maximum, "
                                  "latest reading (below 1 under load: the GPU is held back)",
                                  labels=gpu_labels)
        temp = GaugeMetricFamily("pyrometer_gpu_temperature_celsius", "GPU temperature, latest "
                                 "reading", labels=gpu_labels)
        throttle = GaugeMetricFamily("pyrometer_gpu_throttle_active", "1 while NVML reports this "
                                     "slowdown reason, latest reading",
                                     labels=(*gpu_labels, "reason"))
        replayed = GaugeMetricFamily("pyrometer_gpu_replayed", "1: these GPU figures are "
                                     "replayed from a recording, not read from a GPU",
                                     labels=gpu_labels)
        for key, g in sorted(gpus.items()):
            labels = list(key)
            if g.sm_clock_mhz is not None and g.sm_clock_max_mhz:
                ratio.add_metric(labels, g.sm_clock_mhz / g.sm_clock_max_mhz)
            if g.temperature_c is not None:
                temp.add_metric(labels, g.temperature_c)
            if g.clock_event_reasons is not None:
                for reason in SLOWDOWN_REASONS:
                    active = g.clock_event_reasons & CLOCK_EVENT_REASONS[reason]
                    throttle.add_metric([*labels, reason], 1.0 if active else 0.0)
            replayed.add_metric(labels, 1.0 if g.replayed else 0.0)
        yield from (ratio, temp, throttle, replayed)
        found = CounterMetricFamily("pyrometer_spikes", "Latency spikes the alert watcher "
                                    "found, by their top cause", labels=("service", "top_cause"))
        for (service, cause), n in sorted(spikes.items()):
            found.add_metric([service, cause], n)
        yield found


def _copy(st: _RouteStats) -> _RouteStats:
    return _RouteStats(dict(st.codes), list(st.buckets), st.total_s, st.count)
