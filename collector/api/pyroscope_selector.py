"""Prometheus label selectors (`{service_name="x", version=~"1\\..*"}`) as Pyroscope's query
API takes them, and the label sets they match.

A stored label set reads, in Pyroscope's terms, as `service_name`, `instance` and
`version` (when not empty), its other labels, and `__name__="process_cpu"`. Matchers
are `=`, `!=`, `=~` and `!~`; regexes are anchored at both ends, as in Prometheus, and a
missing label matches as the empty string. `__profile_type__` (which Grafana adds to the
selectors of its label pickers) matches when either of Pyrometer's profile types does. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pyrometer.collector.storage.label_sets import LabelSet

PROFILE_NAME = "process_cpu"
SAMPLES_TYPE = "process_cpu:samples:count:cpu:nanoseconds"
CPU_TYPE = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
PROFILE_TYPES = (SAMPLES_TYPE, CPU_TYPE)
# Grafana's label pickers scope their selectors with the profile type; every stored set
# has both types, so such a matcher holds when either type satisfies it
PROFILE_TYPE_LABEL = "__profile_type__"
_MATCHER = re.compile(r'\s*([A-Za-z_.][A-Za-z0-9_.]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}
MAX_SELECTOR = 4096


class SelectorError(ValueError):
    """A selector that does not parse; the message says where."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str
    test: Callable[[str], bool]


def parse_selector(text: str) -> list[Matcher]:
    """The matchers of `{...}`; "" and "{}" match everything."""
    if len(text) > MAX_SELECTOR:
        raise SelectorError(f"label selector longer than {MAX_SELECTOR} characters")
    body = text.strip()
    if not body:
        return []
    if not (body.startswith("{") and body.endswith("}")):
        raise SelectorError(f"label selector {body[:64]!r} is not {{name=\"value\", ...}}")
    inner, pos, matchers = body[1:-1].strip(), 0, []
    while pos < len(inner):
        match = _MATCHER.match(inner, pos)
        if match is None:
            raise SelectorError(f"cannot parse the label selector at {inner[pos:pos + 32]!r}")
        name, op, raw, _ = match.groups()
        matchers.append(_matcher(name, op, _unescape(raw)))
        pos = match.end()
    return matchers


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), raw)


def _matcher(name: str, op: str, value: str) -> Matcher:
    if op in ("=~", "!~"):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise SelectorError(f"bad regex {value[:64]!r} for {name}: {exc}") from None
        if op == "=~":
            return Matcher(name, op, value, lambda v: pattern.fullmatch(v) is not None)
        return Matcher(name, op, value, lambda v: pattern.fullmatch(v) is None)
    if op == "=":
        return Matcher(name, op, value, lambda v: v == value)
    return Matcher(name, op, value, lambda v: v != value)


def pyroscope_labels(label_set: LabelSet) -> dict[str, str]:
    """A stored label set as Pyroscope's labels."""
    labels = label_set.labels()
    labels["service_name"] = label_set.service
    if label_set.instance:
        labels["instance"] = label_set.instance
    if label_set.version:
        labels["version"] = label_set.version
    labels["__name__"] = PROFILE_NAME
    return labels


def matching(sets: Iterable[LabelSet], matchers: list[Matcher]) -> list[LabelSet]:
    """The sets every matcher accepts."""
    return [s for s in sets if matches(pyroscope_labels(s), matchers)]


def matches(labels: dict[str, str], matchers: list[Matcher]) -> bool:
    return all(any(m.test(t) for t in PROFILE_TYPES) if m.name == PROFILE_TYPE_LABEL
               else m.test(labels.get(m.name, "")) for m in matchers)
