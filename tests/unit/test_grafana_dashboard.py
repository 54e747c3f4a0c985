"""The Grafana dashboard as code: the checked-in JSON is what deploy/grafana/dashboard.py
builds, every query reads a metric the collector exposes, and the compose stack
provisions it beside Prometheus scraping the collector."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import yaml
from prometheus_client.parser import text_string_to_metric_families
from unit.test_service_metrics import filled

from support.telemetry_builder import agent_stats

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboard", DEPLOY / "grafana" / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_checked_in_dashboard_is_what_the_code_builds() -> None:
    built = generator().render()
    assert (DEPLOY / "grafana" / "dashboards" / "pyrometer.json").read_text() == built, \
        "run `make dashboard` and commit the JSON"


def test_every_query_reads_a_metric_the_collector_exposes() -> None:
    board = json.loads(generator().render())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    exposed = set()
    metrics = filled()
    metrics.agents.observe("model", "pod-1", [agent_stats(0)])
    for family in text_string_to_metric_families(metrics.render().decode()):
        exposed.update(s.name for s in family.samples)
    for expr in exprs:
        used = set(re.findall(r"\bpyrometer_\w+", expr))
        assert used and used <= exposed, (expr, used - exposed)
        assert 'service=~"$service"' in expr  # every panel follows the service picker
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "service"}


def test_compose_provisions_prometheus_and_grafana_on_the_collector() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    grafana, prometheus = compose["services"]["grafana"], compose["services"]["prometheus"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["collector:7071"]
    assert any(v.startswith("./prometheus/prometheus.yml:") for v in prometheus["volumes"])
    sources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "pyrometer.yaml").read_text())
    kinds = {d["type"]: d["url"] for d in sources["datasources"]}
    assert kinds == {"prometheus": "http://prometheus:9090",
                     "grafana-pyroscope-datasource": "http://collector:7071"}
