"""What a notification says, in the three shapes webhooks take.

A notice is a spike that was found or an SLO whose state changed. Each names the
service, route and instance, the spike's window and peak against its baseline, its top
causes with their one-line evidence (the words an on-call engineer reads first), the
stage summary, and a link to the collector's page for that window.

- json: Pyrometer's own object (`type`, `status`, ... as below), for any receiver;
- slack: an incoming-webhook message (`text` with Slack's mrkdwn), which Slack and the
  chat tools that copy its webhook format (Mattermost, Rocket.Chat) accept;
- alertmanager: the body Prometheus Alertmanager sends its webhook receivers (version
  4: `status`, `alerts` with `labels`, `annotations`, `startsAt`, `endsAt`,
  `generatorURL`, `fingerprint`), so tools written for Alertmanager receive it as is.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.timeparse import format_time

CAUSES_SHOWN = 3


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str  # "spike" or "slo"
    status: str  # "firing" or "resolved"
    key: str  # what deduplicates it: one spike, or one SLO state change
    service: str
    title: str  # one line
    start_ns: Nanos
    end_ns: Nanos | None
    severity: str  # "page", "ticket" or "info" (a spike)
    url: str
    labels: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    lines: Sequence[str] = ()  # the evidence, a line each


def spike_notice(service: str, spike: Mapping[str, Any], percentile: str, ui_url: str) -> Notice:
    """A notice from one spike of the spikes answer (report.to_json's shape)."""
    where = "".join(f" {k} {spike[k]}" for k in ("route", "instance") if spike.get(k))
    causes = spike.get("causes", [])[:CAUSES_SHOWN]
    top = causes[0]["kind"] if causes else "unexplained"
    title = (f"{service}{where}: {percentile} {spike['peak_ms']:.1f} ms vs "
             f"{spike['baseline_ms']:.1f} ms baseline from {spike['start']}; top cause {top}")
    lines = [f"{n}. {c['kind']} {c['score']:.2f}: {c['explanation']}"
             for n, c in enumerate(causes, 1)] or ["no candidate cause scored; see what was checked"]
    if spike.get("stages_summary"):
        lines.append(f"stages: {spike['stages_summary']}")
    traced = [r for r in spike.get("slowest_requests", []) if r.get("trace_id")]
    if traced:
        slow = traced[0]
        lines.append(f"slowest traced request: {slow['latency_ms']:.1f} ms, trace "
                     f"{slow.get('trace_url') or slow['trace_id']}")
    labels = {"service": service, "route": spike.get("route") or "",
              "instance": spike.get("instance") or "", "top_cause": top}
    key = f"spike/{service}/{labels['route']}/{labels['instance']}/{spike['start_ns']}"
    return Notice("spike", "firing", key, service, title, spike["start_ns"], spike["end_ns"],
                  "info", view_url(ui_url, service, spike["start_ns"], spike["end_ns"]),
                  labels, {"peak_ms": spike["peak_ms"], "baseline_ms": spike["baseline_ms"],
                           "percentile": percentile,
                           "causes": [{k: c[k] for k in ("kind", "score", "explanation")}
                                      for c in causes]}, lines)


def slo_notice(status: Mapping[str, Any], previous: str, ui_url: str, lookback_ns: Nanos
               ) -> Notice:
    """A notice from one SLO whose state changed (api/slos.status_json's shape)."""
    state = status["state"]
    firing = state != "ok"
    burns = ", ".join(f"{b['window']} {b['burn_rate']:.1f}x" for b in status["burn_rates"])
    word = state if firing else f"resolved (was {previous})"
    title = (f"{status['service']} SLO {status['name']}: {word}; {status['objective']:.2%} "
             f"under {status['threshold_ms']:g} ms over {status['period']}")
    left = status["budget_left"]
    lines = [f"burn rates: {burns}",
             f"error budget left: {'n/a' if left is None else f'{left:.1%}'}"]
    at = status["at_ns"]
    labels = {"service": status["service"], "slo": status["name"],
              "route": status.get("route") or ""}
    return Notice("slo", "firing" if firing else "resolved",
                  f"slo/{status['service']}/{status['name']}/{state}/{at}", status["service"],
                  title, at, None if firing else at, state if firing else previous,
                  view_url(ui_url, status["service"], at - lookback_ns, at), labels,
                  {"state": state, "previous_state": previous, "budget_left": left,
                   "burn_rates": status["burn_rates"]}, lines)


CONTEXT_NS = 30 * 60 * NANOS_PER_SECOND  # shown around the window: its baseline and after


def view_url(ui_url: str, service: str, start_ns: Nanos, end_ns: Nanos) -> str:
    """The collector page's permalink for the window: the timeline from half an hour
    before to half an hour after it, the window itself selected (`sel`, in ms), so the
    page opens on its flame graph."""
    query = urllib.parse.urlencode({
        "service": service, "from": _seconds(start_ns - CONTEXT_NS),
        "to": _seconds(end_ns + CONTEXT_NS),
        "sel": f"{start_ns // 1_000_000},{end_ns // 1_000_000}"})
    return f"{ui_url}/?{query}"


def _seconds(ns: Nanos) -> str:
    return f"{ns / NANOS_PER_SECOND:.3f}"


def body(notice: Notice, fmt: str) -> dict[str, Any]:
    """The POST body of `notice` for a webhook of format `fmt`."""
    if fmt == "slack":
        icon = ":rotating_light:" if notice.status == "firing" else ":white_check_mark:"
        text = "\n".join([f"{icon} *{_slack_escape(notice.title)}*",
                          *(_slack_escape(line) for line in notice.lines),
                          f"<{notice.url}|open in Pyrometer>"])
        return {"text": text}
    if fmt == "alertmanager":
        labels = {"alertname": f"Pyrometer{notice.kind.capitalize()}", **notice.labels,
                  "severity": notice.severity}
        labels = {k: v for k, v in labels.items() if v}
        alert = {"status": notice.status, "labels": labels,
                 "annotations": {"summary": notice.title, "description": "\n".join(notice.lines)},
                 "startsAt": format_time(notice.start_ns),
                 "endsAt": format_time(notice.end_ns) if notice.status == "resolved"
                 and notice.end_ns is not None else "0001-01-01T00:00:00Z",
                 "generatorURL": notice.url,
                 "fingerprint": hashlib.sha256(notice.key.encode()).hexdigest()[:16]}
        return {"version": "4", "groupKey": notice.key, "truncatedAlerts": 0,
                "status": notice.status, "receiver": "pyrometer", "groupLabels": {},
                "commonLabels": labels, "commonAnnotations": alert["annotations"],
                "externalURL": notice.url.split("/?")[0], "alerts": [alert]}
    return {"type": notice.kind, "status": notice.status, "key": notice.key,
            "service": notice.service, "title": notice.title, "severity": notice.severity,
            "start": format_time(notice.start_ns), "start_ns": notice.start_ns,
            "end": format_time(notice.end_ns) if notice.end_ns is not None else None,
            "end_ns": notice.end_ns, "labels": dict(notice.labels), "url": notice.url,
            "lines": list(notice.lines), **notice.details}


def _slack_escape(text: str) -> str:
    """Slack's three control characters, as its message formatting asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
