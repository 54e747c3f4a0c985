"""The Grafana dashboard for Pyrometer's /metrics, as code: `make dashboard` writes
deploy/grafana/dashboards/pyrometer.json from this file, and a test checks that the
checked-in JSON is what this file builds (so the two never drift).

Built with Grafana's own maintained builders (grafana-foundation-sdk) rather than
hand-written JSON, so panel and query fields follow Grafana's schema. Every query reads
the per-service families of collector/service_metrics.py and the agents' footprint of
collector/agent_metrics.py; `$service` picks the service.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef

OUT = Path(__file__).resolve().parent / "dashboards" / "pyrometer.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SERVICE = 'service=~"$service"'

# (title, unit, [(expr, legend)]) per panel, in reading order
PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("Request rate by route", "reqps", (
        (f"sum by (route) (rate(pyrometer_requests_total{{{SERVICE}}}[$__rate_interval]))",
         "{{route}}"),)),
    ("Errors (5xx) by route", "reqps", (
        (f'sum by (route) (rate(pyrometer_requests_total{{{SERVICE}, code="5xx"}}'
         "[$__rate_interval]))", "{{route}}"),)),
    ("Latency p50 / p95 / p99", "s", tuple(
        (f"histogram_quantile({q}, sum by (le) (rate(pyrometer_request_duration_seconds_bucket"
         f"{{{SERVICE}}}[$__rate_interval])))", f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99))),
    ("GPU SM clock / max", "percentunit", (
        (f"pyrometer_gpu_sm_clock_ratio{{{SERVICE}}}", "{{service_instance}} GPU {{gpu}}"),)),
    ("GPU throttle reasons active", "short", (
        (f"sum by (reason) (pyrometer_gpu_throttle_active{{{SERVICE}}})", "{{reason}}"),)),
    ("GPU temperature", "celsius", (
        (f"pyrometer_gpu_temperature_celsius{{{SERVICE}}}", "{{service_instance}} GPU {{gpu}}"),
        # a recording replayed by the agent, not a GPU: shown so nobody mistakes it
        (f"pyrometer_gpu_replayed{{{SERVICE}}} > 0", "replayed: {{service_instance}}"))),
    ("Spikes found, by top cause", "short", (
        (f"sum by (top_cause) (increase(pyrometer_spikes_total{{{SERVICE}}}[1h]))",
         "{{top_cause}}"),)),
    ("Agent footprint: CPU", "short", (
        (f"pyrometer_agent_cpu_cores{{{SERVICE}}}", "{{service_instance}}"),)),
    ("Agent footprint: dropped batches", "short", (
        (f"pyrometer_agent_dropped_batches{{{SERVICE}}}", "{{service_instance}}"),)),
)


def build() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("Pyrometer")
        .uid("pyrometer-overview")
        .tags(["pyrometer", "profiling"])
        .refresh("30s")
        .time("now-1h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source")
                       .type("prometheus"))
        .with_variable(dashboard.QueryVariable("service").label("Service")
                       .datasource(DATASOURCE)
                       .query("label_values(pyrometer_requests_total, service)")
                       .multi(True).include_all(True))
    )
    for title, unit, queries in PANELS:
        panel = (timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE)
                 .height(8).span(12))
        for ref, (expr, legend) in zip("ABCDEF", queries, strict=False):
            panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend)
                                      .ref_id(ref))
        board = board.with_panel(panel)
    return board


def render() -> str:
    """The dashboard's JSON, as checked in (sorted keys, two-space indent, final newline)."""
    model = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(build().build()))
    return json.dumps(model, sort_keys=True, indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
