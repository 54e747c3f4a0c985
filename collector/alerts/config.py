"""The alerts file (`pyrometer collector --alerts FILE`): where notifications go, and how
often and how far back the collector looks for spikes.

    {"webhooks": [{"url": "https://hooks.slack.com/services/...", "format": "slack"},
                  {"url": "http://alertmanager:9093/...", "format": "alertmanager"},
                  {"url": "http://ops.internal/pyrometer", "format": "json"}],
     "interval": "30s", "lookback": "15m", "baseline": "30m", "step": "10s",
     "percentile": "p99", "ui_url": "https://pyrometer.internal", "services": ["model"]}

Every key but "webhooks" is optional (the values above, but "services", the services
watched for spikes: all with data, and "ui_url": the collector's own HTTP address as it
listens). Every SLO of --slos is watched.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.jsonfile import FileConfigError, read_json
from pyrometer.collector.timeparse import TimeFormatError, parse_duration

FORMATS = ("json", "slack", "alertmanager")
PERCENTILES = ("p95", "p99", "max")


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    format: str = "json"


@dataclass(frozen=True, slots=True)
class AlertConfig:
    webhooks: tuple[Webhook, ...]
    interval_ns: Nanos = 30 * NANOS_PER_SECOND
    lookback_ns: Nanos = 15 * 60 * NANOS_PER_SECOND
    baseline_ns: Nanos = 30 * 60 * NANOS_PER_SECOND
    step_ns: Nanos = 10 * NANOS_PER_SECOND
    percentile: str = "p99"
    ui_url: str = ""  # empty: the collector's own HTTP address
    services: tuple[str, ...] = ()  # watched for spikes; empty: every service with data


class AlertConfigError(FileConfigError):
    """An alerts file that cannot be used; the message names the file and the key."""


def load_alerts(path: Path) -> AlertConfig:
    doc = read_json(path, "alerts", AlertConfigError)
    where = f"alerts {path}"
    if not isinstance(doc, Mapping):
        raise AlertConfigError(f"{where}: expected an object with \"webhooks\"")
    unknown = set(doc) - {"webhooks", "interval", "lookback", "baseline", "step", "percentile",
                          "ui_url", "services"}
    if unknown:
        raise AlertConfigError(f"{where}: unknown keys {sorted(unknown)}")
    hooks = doc.get("webhooks")
    if not isinstance(hooks, list) or not hooks:
        raise AlertConfigError(f'{where}: "webhooks" must list at least one {{"url", "format"}}')
    webhooks = tuple(_webhook(f"{where}, webhook {n}", hook) for n, hook in enumerate(hooks, 1))
    durations = {key: _duration(where, doc, key, default) for key, default in (
        ("interval", "30s"), ("lookback", "15m"), ("baseline", "30m"), ("step", "10s"))}
    if durations["baseline"] < 3 * durations["step"]:
        raise AlertConfigError(f"{where}: baseline must be at least three steps")
    if durations["lookback"] < 3 * durations["step"]:
        raise AlertConfigError(f"{where}: lookback must be at least three steps")
    percentile = doc.get("percentile", "p99")
    if percentile not in PERCENTILES:
        raise AlertConfigError(f"{where}: percentile {percentile!r}: use one of "
                               f"{', '.join(PERCENTILES)}")
    ui_url = doc.get("ui_url", "")
    if not isinstance(ui_url, str) or (ui_url and not _http_url(ui_url)):
        raise AlertConfigError(f"{where}: ui_url {ui_url!r} is not an http(s) URL")
    services = doc.get("services", [])
    if not isinstance(services, list) or not all(isinstance(s, str) and s for s in services):
        raise AlertConfigError(f'{where}: "services" must be a list of service names')
    return AlertConfig(webhooks, durations["interval"], durations["lookback"],
                       durations["baseline"], durations["step"], percentile,
                       ui_url.rstrip("/"), tuple(services))


def _webhook(where: str, hook: Any) -> Webhook:
    if not isinstance(hook, Mapping) or not isinstance(hook.get("url"), str):
        raise AlertConfigError(f'{where}: needs "url"')
    if not _http_url(hook["url"]):
        raise AlertConfigError(f"{where}: url {hook['url']!r} is not an http(s) URL")
    fmt = hook.get("format", "json")
    if fmt not in FORMATS:
        raise AlertConfigError(f"{where}: format {fmt!r}: use one of {', '.join(FORMATS)}")
    unknown = set(hook) - {"url", "format"}
    if unknown:
        raise AlertConfigError(f"{where}: unknown keys {sorted(unknown)}")
    return Webhook(hook["url"], fmt)


def _duration(where: str, doc: Mapping[str, Any], key: str, default: str) -> Nanos:
    raw = doc.get(key, default)
    try:
        value = parse_duration(str(raw))
    except TimeFormatError as err:
        raise AlertConfigError(f"{where}: {key}: {err}") from None
    if value < NANOS_PER_SECOND:
        raise AlertConfigError(f"{where}: {key} {raw}: at least 1s")
    return value


def _http_url(text: str) -> bool:
    parts = urllib.parse.urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
