"""Successive Prometheus expositions of a serving engine in, canonical readings out.

Pure: fed the exposition's text and the time it was read, it keeps only the previous
cumulative values. Gauges come out as read; counters and histograms as their increase
since the previous scrape (a counter that went down was reset by a restart: its new
value is the increase), so the first scrape yields gauges only. Labels are dropped but
the model's (MODEL_LABELS): several label sets of one model are summed (a gauge that
is a fraction takes the largest), and past `max_models` models the rest are dropped and
counted, so one scrape costs a bounded number of readings whatever the engine exposes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from pyrometer.agent.engine.mapping import MODEL_LABELS, Rule
from pyrometer.agent.shared.model import NANOS_PER_SECOND, EngineReading, Nanos

MAX_MODELS = 16


class ExpositionError(ValueError):
    """The text is not a Prometheus exposition."""


@dataclass(frozen=True, slots=True)
class _Series:
    kind: str  # gauge, counter or histogram (summary: the same sum and count)
    value: float  # gauge value, counter value, or histogram sum
    count: float = 0.0  # histogram count


_Key = tuple[str, str]  # (family, model)


class Converter:
    """One engine endpoint's scrapes; `convert` returns the readings of one."""

    def __init__(self, rules: Sequence[Rule], interval_s: float,
                 max_models: int = MAX_MODELS) -> None:
        self._interval_s = interval_s  # a first scrape's gauges: the nominal interval
        self._rules = tuple(rules)
        self._wanted = {r.source for r in rules} | {r.per for r in rules if r.per}
        self._reduce = {r.source: r.reduce for r in rules}
        self._max_models = max_models
        self._previous: dict[_Key, _Series] = {}
        self._previous_ns: Nanos | None = None
        self.dropped_models = 0  # label sets of models beyond max_models, all scrapes
        self.matched = 0  # series of the last scrape that a rule knows

    def convert(self, text: str, now_ns: Nanos) -> list[EngineReading]:
        """The readings of this scrape; ExpositionError (and no change) for junk."""
        current = self._parse(text)
        interval = ((now_ns - self._previous_ns) / NANOS_PER_SECOND
                    if self._previous_ns is not None else None)
        out: dict[tuple[str, str], EngineReading] = {}  # (metric, model): the first rule wins
        for rule in self._rules:
            for (family, model), series in current.items():
                if family != rule.source or (rule.metric, model) in out:
                    continue
                reading = self._reading(rule, model, series, current, now_ns, interval)
                if reading is not None:
                    out[(rule.metric, model)] = reading
        self._previous, self._previous_ns = current, now_ns
        self.matched = len(current)
        return list(out.values())

    def _reading(self, rule: Rule, model: str, series: _Series, current: dict[_Key, _Series],
                 now_ns: Nanos, interval: float | None) -> EngineReading | None:
        if series.kind == "gauge":
            return EngineReading(now_ns, rule.metric, series.value * rule.scale,
                                 interval or self._interval_s, 0, rule.engine, model)
        before = self._previous.get((rule.source, model))
        if interval is None or interval <= 0 or before is None or before.kind != series.kind:
            return None
        value = _increase(before.value, series.value)
        count = _increase(before.count, series.count)
        if rule.per is not None:
            per_now, per_before = current.get((rule.per, model)), self._previous.get((rule.per, model))
            if per_now is None or per_before is None:
                return None
            count = _increase(per_before.value, per_now.value)
        return EngineReading(now_ns, rule.metric, value * rule.scale, interval, round(count),
                             rule.engine, model)

    def _parse(self, text: str) -> dict[_Key, _Series]:
        try:
            families = list(text_string_to_metric_families(text))
        except (ValueError, IndexError, TypeError) as err:
            raise ExpositionError(f"not a Prometheus exposition ({err})") from None
        out: dict[_Key, _Series] = {}
        models: set[str] = set()
        # "# TYPE x counter" over samples named x_total: the parser files those samples
        # under an untyped family x_total; they are the counter's
        counters = {f.name for f in families if f.type == "counter"}
        for family in families:
            name = family.name
            kind = {"counter": "counter", "histogram": "histogram", "summary": "histogram",
                    "gaugehistogram": "histogram"}.get(family.type, "gauge")
            if kind == "gauge" and name.endswith("_total") and name[:-6] in counters:
                name, kind = name[:-6], "counter"
            if name not in self._wanted:
                continue
            for model, series in _series(name, kind, family.samples,
                                         self._reduce.get(name, "sum")).items():
                if model not in models and len(models) >= self._max_models:
                    self.dropped_models += 1
                    continue
                models.add(model)
                out[(name, model)] = series
        return out


def _series(name: str, kind: str, samples: Iterable[object], reduce: str) -> dict[str, _Series]:
    """Per model, the family's samples summed over the other labels (or their max)."""
    values: dict[str, list[float]] = {}
    counts: dict[str, float] = {}
    wanted = {"gauge": (name,), "counter": (name + "_total", name),
              "histogram": (name + "_sum",)}[kind]
    for sample in samples:
        sname, labels, value = sample.name, sample.labels, sample.value  # type: ignore[attr-defined]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            continue
        model = next((labels[k] for k in MODEL_LABELS if k in labels), "")
        if sname in wanted:
            values.setdefault(model, []).append(float(value))
        elif kind == "histogram" and sname == name + "_count":
            counts[model] = counts.get(model, 0.0) + float(value)
    return {model: _Series(kind, max(vs) if reduce == "max" and kind == "gauge" else sum(vs),
                           counts.get(model, 0.0))
            for model, vs in values.items()}


def _increase(before: float, now: float) -> float:
    """A counter's increase; one that went down was reset, and counts again from 0."""
    return now - before if now >= before else now
