"""Per-service figures on /metrics (collector/service_metrics.py): what they count, that
their labels never collide with Prometheus's own, that cardinality stays bounded, and
that the exposition is valid (prometheus_client's parser; promtool where installed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyrometer.agent.shared.clock_events import CLOCK_EVENT_REASONS
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.service_metrics import OTHER_ROUTE, ServiceMetrics
from support.telemetry_builder import BASE_NS, gpu, request

RESERVED = {"instance", "job"}


def samples(metrics: CollectorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def filled() -> CollectorMetrics:
    metrics = CollectorMetrics()
    reqs = [request(i, latency_ms=20) for i in range(8)] + [
        request(9, latency_ms=700, status=503), request(10, latency_ms=3, route="/healthz")]
    hot = CLOCK_EVENT_REASONS["hw_thermal_slowdown"]
    gpus = [gpu(1, sm_clock_mhz=1980), gpu(2, sm_clock_mhz=990, clock_event_reasons=hot,
                                            temperature_c=91.0, replayed=True)]
    metrics.services.observe("model", "pod-1", reqs, gpus)
    metrics.services.spike("model", "gpu_throttling")
    return metrics


def test_requests_latency_and_gpu_state_per_service() -> None:
    got = samples(filled())
    labels = (("code", "2xx"), ("route", "/v1/predict"), ("service", "model"))
    assert got[("pyrometer_requests_total", labels)] == 8
    assert got[("pyrometer_requests_total", (("code", "5xx"), *labels[1:]))] == 1
    route = (("route", "/v1/predict"), ("service", "model"))
    assert got[("pyrometer_request_duration_seconds_count", route)] == 9
    assert got[("pyrometer_request_duration_seconds_bucket", (("le", "0.025"), *route))] == 8
    assert got[("pyrometer_request_duration_seconds_bucket", (("le", "+Inf"), *route))] == 9
    g = (("gpu", "0"), ("service", "model"), ("service_instance", "pod-1"))
    assert got[("pyrometer_gpu_sm_clock_ratio", g)] == 0.5  # the newest reading
    assert got[("pyrometer_gpu_temperature_celsius", g)] == 91.0
    def reason(name: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((*g, ("reason", name))))

    assert got[("pyrometer_gpu_throttle_active", reason("hw_thermal_slowdown"))] == 1
    assert got[("pyrometer_gpu_throttle_active", reason("sw_power_cap"))] == 0
    assert got[("pyrometer_gpu_replayed", g)] == 1
    assert got[("pyrometer_spikes_total", (("service", "model"),
                                           ("top_cause", "gpu_throttling")))] == 1


def test_no_label_collides_with_the_ones_prometheus_sets() -> None:
    names = {name for (_, labels) in samples(filled()) for name, _ in labels}
    assert "service_instance" in names and not names & RESERVED


def test_routes_services_and_gpus_stay_bounded() -> None:
    now = [BASE_NS]
    metrics = ServiceMetrics(max_services=2, max_routes=3, max_gpus=2, max_age_ns=100,
                             clock=lambda: now[0])
    metrics.observe("a", "p", [request(0, route=f"/r{i}") for i in range(10)], [])
    metrics.observe("b", "p", [], [gpu(0, index=i) for i in range(5)])
    metrics.observe("c", "p", [request(0)], [])  # a third service: not counted
    families = {f.name: f for f in metrics.collect()}
    routes = {s.labels["route"] for s in families["pyrometer_requests"].samples}
    assert routes == {"/r0", "/r1", "/r2", OTHER_ROUTE}
    other = [s for s in families["pyrometer_requests"].samples if s.labels["route"] == OTHER_ROUTE]
    assert other[0].value == 7 and metrics.services_dropped == 1
    assert len(families["pyrometer_gpu_replayed"].samples) == 2
    now[0] += 1000  # nothing refreshed: the GPU series go stale and disappear
    assert not {f.name: f for f in metrics.collect()}["pyrometer_gpu_replayed"].samples


def test_a_late_reading_does_not_roll_a_gpu_back() -> None:
    metrics = ServiceMetrics()
    metrics.observe("model", "pod", [], [gpu(5, sm_clock_mhz=990)])
    metrics.observe("model", "pod", [], [gpu(1, sm_clock_mhz=1980)])  # spooled, older
    ratio = {f.name: f for f in metrics.collect()}["pyrometer_gpu_sm_clock_ratio"]
    assert [s.value for s in ratio.samples] == [0.5]


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool (Debian's prometheus package) is not installed")
def test_promtool_accepts_the_exposition() -> None:
    text = filled().render()
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
