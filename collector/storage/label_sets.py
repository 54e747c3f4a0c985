"""What the label-set reads return: the distinct identities of stored samples, and sample
counts per identity and time step (for Pyroscope's query API, where a Prometheus-style
label selector picks the series; the API matches selectors against these in Python).

Part of the storage seam (store.py): plain values, no SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pyrometer.agent.shared.model import Nanos


@dataclass(frozen=True, slots=True, order=True)
class LabelSet:
    """One distinct (service, instance, version, other labels) of the samples table."""

    service: str
    instance: str
    version: str
    labels_json: str  # the other labels as stored: a JSON object with sorted keys

    def labels(self) -> dict[str, str]:
        try:
            parsed = json.loads(self.labels_json or "{}")
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}


@dataclass(frozen=True, slots=True)
class LabelSetSummary:
    label_set: LabelSet
    samples: int  # in the window asked for


@dataclass(frozen=True, slots=True)
class StepSamples:
    """Samples of one label set (its index in the sets asked for) in one step."""

    set_index: int
    step_start_ns: Nanos
    samples: int
    cpu_ns: float  # each sample times its window's period (1 s / rate)
