"""The agents' own footprint on the collector's /metrics: the latest AgentStats per agent.

Each agent reports its CPU, RSS, queue and cumulative loss counters about once a minute
(Batch.agent_stats). The collector exposes the latest report per (service, service_instance)
as gauges:

    pyrometer_agent_cpu_cores, pyrometer_agent_rss_bytes, pyrometer_agent_queued_batches,
    pyrometer_agent_spooled_batches, pyrometer_agent_spool_bytes,
    pyrometer_agent_dropped_batches, pyrometer_agent_dropped_records,
    pyrometer_agent_reconnects, pyrometer_agent_pyspy_restarts

The loss counters are gauges, not Prometheus counters: they are the agent's own
cumulative counts, which start again at 0 when the agent restarts, and the collector
only relays them (`increase()` over a gauge that resets still reads right with
`resets()`, or alert on the value changing).

Cardinality is bounded: the only labels are service and service_instance (the agent's
--instance; never agent_id,
which is new on every agent start), a series not refreshed for `max_age_ns` is
dropped, and past `max_series` the stalest series makes room for the new one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pyrometer.agent.shared.model import NANOS_PER_SECOND, AgentStats, Nanos

# (metric suffix, AgentStats field, help)
GAUGES: tuple[tuple[str, str, str], ...] = (
    ("cpu_cores", "cpu_cores", "CPU of the agent and its py-spy children, in cores"),
    ("rss_bytes", "rss_bytes", "Resident memory of the agent and its py-spy children"),
    ("queued_batches", "queued_batches", "Batches the agent holds, not yet acknowledged"),
    ("spooled_batches", "spooled_batches", "Of the queued batches, those on disk"),
    ("spool_bytes", "spool_bytes", "Bytes in the agent's on-disk spool"),
    ("dropped_batches", "dropped_batches",
     "Batches the agent lost since it started (queue or spool bounds, corrupt spool, "
     "rejected); the agent's own cumulative count"),
    ("dropped_records", "dropped_records",
     "Telemetry records the agent lost to its buffer bounds since it started"),
    ("reconnects", "reconnects", "Times the agent reopened its stream since it started"),
    ("pyspy_restarts", "pyspy_restarts", "Times the agent restarted py-spy since it started"),
)
# `service_instance`, not `instance`: Prometheus sets `instance` to the scrape target (the
# collector), and a clash would arrive renamed as `exported_instance`
LABELS = ("service", "service_instance")


class AgentGauges(Collector):
    """Latest AgentStats per (service, instance), collected as gauges. Thread-safe."""

    def __init__(self, *, max_series: int = 1000, max_age_ns: Nanos = 3600 * NANOS_PER_SECOND,
                 clock: Callable[[], Nanos] = time.time_ns) -> None:
        self._max_series = max_series
        self._max_age_ns = max_age_ns
        self._clock = clock
        self._lock = threading.Lock()
        # the agent's own report time, and when the collector received it (for staleness)
        self._latest: dict[tuple[str, str], tuple[AgentStats, Nanos]] = {}

    def observe(self, service: str, instance: str, reports: Iterable[AgentStats]) -> None:
        """Keep the newest of `reports` (by the agent's time) if it is newer than held."""
        newest = max(reports, key=lambda s: s.time_ns, default=None)
        if newest is None:
            return
        key = (service, instance)
        now = self._clock()
        with self._lock:
            held = self._latest.get(key)
            if held is not None and held[0].time_ns > newest.time_ns:
                return  # a spooled report arriving late must not roll the gauges back
            if held is None and len(self._latest) >= self._max_series:
                stalest = min(self._latest, key=lambda k: self._latest[k][1])
                del self._latest[stalest]
            self._latest[key] = (newest, now)

    def series(self) -> dict[tuple[str, str], AgentStats]:
        """The reports now exposed, by (service, instance)."""
        self._expire()
        with self._lock:
            return {key: stats for key, (stats, _) in self._latest.items()}

    def _expire(self) -> None:
        cutoff = self._clock() - self._max_age_ns
        with self._lock:
            for key in [k for k, (_, seen) in self._latest.items() if seen < cutoff]:
                del self._latest[key]

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # the families exist even before the first report: registration never collects
        return [GaugeMetricFamily(f"pyrometer_agent_{name}", doc, labels=LABELS)
                for name, _, doc in GAUGES]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        latest = sorted(self.series().items())
        for name, field_name, doc in GAUGES:
            family = GaugeMetricFamily(f"pyrometer_agent_{name}", doc, labels=LABELS)
            for (service, instance), stats in latest:
                family.add_metric([service, instance], float(getattr(stats, field_name)))
            yield family
