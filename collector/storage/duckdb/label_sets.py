"""SQL reads by label set (service, instance, version, labels): the distinct sets of a
window, and profiles and per-step sample counts of a chosen few. The sets travel as
parallel lists joined against the samples table, so any number of them is one query."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.model import Profile
from pyrometer.collector.storage.duckdb.profiles import merge_rows
from pyrometer.collector.storage.label_sets import LabelSet, LabelSetSummary, StepSamples

# a window counts when its midpoint is in [start, end), as in ProfileFilter.where
_WINDOW = ("samples.start_ns < $end AND samples.end_ns > $start "
           "AND samples.start_ns + (samples.end_ns - samples.start_ns) // 2 >= $start "
           "AND samples.start_ns + (samples.end_ns - samples.start_ns) // 2 < $end")
_SETS = ("(SELECT unnest($services) AS service, unnest($instances) AS instance, "
         "unnest($versions) AS version, unnest($labels) AS labels, unnest($indexes) AS set_index) AS k")
_JOIN = ("JOIN " + _SETS + " ON samples.service = k.service AND samples.instance = k.instance "
         "AND samples.version = k.version AND samples.labels = k.labels")


def _params(start_ns: Nanos, end_ns: Nanos, sets: Sequence[LabelSet]) -> dict[str, Any]:
    return {"start": start_ns, "end": end_ns,
            "services": [s.service for s in sets], "instances": [s.instance for s in sets],
            "versions": [s.version for s in sets], "labels": [s.labels_json for s in sets],
            "indexes": list(range(len(sets)))}


def read_label_sets(cur: duckdb.DuckDBPyConnection, start_ns: Nanos, end_ns: Nanos
                    ) -> list[LabelSetSummary]:
    rows = cur.execute(
        "SELECT service, instance, version, labels, sum(count)::BIGINT FROM samples "
        f"WHERE {_WINDOW} GROUP BY ALL ORDER BY ALL", {"start": start_ns, "end": end_ns},
    ).fetchall()
    return [LabelSetSummary(LabelSet(s, i, v, labels), n) for s, i, v, labels, n in rows]


def read_selected_profile(cur: duckdb.DuckDBPyConnection, start_ns: Nanos, end_ns: Nanos,
                          sets: Sequence[LabelSet]) -> Profile:
    services = sorted({s.service for s in sets})
    name = services[0] if len(services) == 1 else ""
    if not sets:
        return merge_rows(cur, [], name, start_ns, end_ns)
    rows = cur.execute(
        "SELECT stack_no, rate_hz, bool_or(idle_included), sum(count)::BIGINT "
        f"FROM samples {_JOIN} WHERE {_WINDOW} GROUP BY stack_no, rate_hz",
        _params(start_ns, end_ns, sets),
    ).fetchall()
    return merge_rows(cur, rows, name, start_ns, end_ns)


def read_steps(cur: duckdb.DuckDBPyConnection, start_ns: Nanos, end_ns: Nanos, step_ns: Nanos,
               sets: Sequence[LabelSet]) -> list[StepSamples]:
    if not sets:
        return []
    params = _params(start_ns, end_ns, sets) | {"step": step_ns}
    rows = cur.execute(
        "SELECT k.set_index, $start + ((samples.start_ns + (samples.end_ns - samples.start_ns) // 2 "
        "- $start) // $step) * $step AS step_start, sum(count)::BIGINT, "
        "sum(count * 1e9 / rate_hz)::DOUBLE "
        f"FROM samples {_JOIN} WHERE {_WINDOW} GROUP BY ALL ORDER BY ALL",
        params,
    ).fetchall()
    return [StepSamples(i, start, n, cpu) for i, start, n, cpu in rows]
