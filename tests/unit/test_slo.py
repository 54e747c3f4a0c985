"""Latency objectives (collector/analysis/slo.py): burn rates, states and the config file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pyrometer.collector.analysis.slo import (
    DAY,
    HOUR,
    MINUTE,
    Objective,
    SloConfigError,
    evaluate,
    load_objectives,
    windows,
)

SLO = Objective("predict", "model", 0.99, 300.0)
AT = 1_800_000_000 * 10**9


def counts(period: tuple[int, int], per_window: dict[int, tuple[int, int]]) -> list[tuple[int, int]]:
    lengths = [5 * MINUTE, 30 * MINUTE, HOUR, 6 * HOUR]
    return [period] + [per_window.get(w, (1000, 1000)) for w in lengths]


def test_the_windows_end_at_the_moment_asked() -> None:
    assert windows(SLO, AT) == [(AT - 28 * DAY, AT), (AT - 5 * MINUTE, AT), (AT - 30 * MINUTE, AT),
                                (AT - HOUR, AT), (AT - 6 * HOUR, AT)]


@pytest.mark.parametrize(("bad", "state"), [
    ({5 * MINUTE: 200, HOUR: 150}, "page"),  # 20% and 15% bad: burn 20 and 15, both >= 14.4
    ({5 * MINUTE: 200, HOUR: 100}, "ok"),  # the hour only at 10: the short burst alone pages nobody
    ({30 * MINUTE: 80, 6 * HOUR: 60}, "ticket"),  # burn 8 and 6
    ({30 * MINUTE: 80, 6 * HOUR: 50}, "ok"),
    ({5 * MINUTE: 500, HOUR: 500, 30 * MINUTE: 500, 6 * HOUR: 500}, "page"),  # page wins
])  # fmt: skip
def test_page_and_ticket_need_both_windows_of_their_pair(bad: dict[int, int], state: str) -> None:
    status = evaluate(SLO, AT, counts((100_000, 99_900),
                                      {w: (1000, 1000 - n) for w, n in bad.items()}))
    assert status.state == state


def test_budget_left_and_burn_rates() -> None:
    status = evaluate(SLO, AT, counts((100_000, 99_750), {HOUR: (1000, 990)}))
    assert status.bad == 250 and status.budget_left == pytest.approx(0.75)  # 250 of 1000 allowed
    assert {b.window_ns: b.burn_rate for b in status.burns}[HOUR] == pytest.approx(1.0)
    overspent = evaluate(SLO, AT, counts((100_000, 97_000), {}))
    assert overspent.budget_left == pytest.approx(-2.0)
    empty = evaluate(SLO, AT, [(0, 0)] * 5)
    assert math.isnan(empty.budget_left) and empty.state == "ok"
    assert all(b.burn_rate == 0 for b in empty.burns)


def test_objectives_file_takes_a_share_or_a_percentile(tmp_path: Path) -> None:
    path = tmp_path / "slos.json"
    path.write_text(json.dumps({"slos": [
        {"name": "a", "service": "model", "objective": 0.995, "threshold_ms": 250,
         "period": "7d", "route": "/v1/predict"},
        {"name": "b", "service": "model", "percentile": "p99", "threshold_ms": 300}]}))
    a, b = load_objectives(path)
    assert (a.objective, a.period_ns, a.route) == (0.995, 7 * DAY, "/v1/predict")
    assert (b.objective, b.threshold_ms, b.period_ns) == (0.99, 300.0, 28 * DAY)


@pytest.mark.parametrize(("entry", "message"), [
    ({"service": "m", "objective": 0.99, "threshold_ms": 1}, 'needs "name"'),
    ({"name": "a", "service": "m", "threshold_ms": 1}, "exactly one of"),
    ({"name": "a", "service": "m", "objective": 0.99, "percentile": "p99", "threshold_ms": 1},
     "exactly one of"),
    ({"name": "a", "service": "m", "objective": 99, "threshold_ms": 1}, "between 0 and 1"),
    ({"name": "a", "service": "m", "percentile": "p100", "threshold_ms": 1}, "expected p50"),
    ({"name": "a", "service": "m", "objective": 0.9}, 'needs "threshold_ms"'),
    ({"name": "a", "service": "m", "objective": 0.9, "threshold_ms": 1, "period": "1m"},
     "expected 6h to 400d"),
    ({"name": "a", "service": "m", "objective": 0.9, "threshold_ms": 1, "period": "soon"},
     "period:"),
    ({"name": "a", "service": "m", "objective": 0.9, "threshold_ms": 1, "latency": 3},
     "unknown keys"),
])  # fmt: skip
def test_a_bad_entry_is_refused_naming_it(tmp_path: Path, entry: dict[str, object],
                                          message: str) -> None:
    path = tmp_path / "slos.json"
    path.write_text(json.dumps({"slos": [entry]}))
    with pytest.raises(SloConfigError, match=f"entry 1: .*{message}"):
        load_objectives(path)


def test_names_must_be_unique_and_the_file_json(tmp_path: Path) -> None:
    path = tmp_path / "slos.json"
    one = {"name": "a", "service": "m", "objective": 0.9, "threshold_ms": 1}
    path.write_text(json.dumps({"slos": [one, one]}))
    with pytest.raises(SloConfigError, match="names used twice: a"):
        load_objectives(path)
    path.write_text("[")
    with pytest.raises(SloConfigError, match="not JSON"):
        load_objectives(path)
