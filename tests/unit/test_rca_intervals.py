"""The evaluation's 95% Wilson score intervals, against values worked out by hand from
(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n) with z = 1.96."""

from __future__ import annotations

from typing import Any

import pytest

from scenarios import metrics, report


@pytest.mark.parametrize(("successes", "trials", "low", "high"), [
    (3, 3, 0.4385, 1.0),
    (0, 3, 0.0, 0.5615),
    (2, 3, 0.2077, 0.9385),
    (5, 10, 0.2366, 0.7634),
    (9, 9, 0.7008, 1.0),
    (18, 20, 0.6990, 0.9721),
])  # fmt: skip
def test_wilson_matches_known_values(successes: int, trials: int, low: float, high: float) -> None:
    interval = metrics.wilson(successes, trials)
    assert interval is not None
    assert interval == pytest.approx((low, high), abs=5e-4)


def test_wilson_without_trials_or_with_bad_counts() -> None:
    assert metrics.wilson(0, 0) is None
    with pytest.raises(ValueError):
        metrics.wilson(4, 3)


def test_wilson_narrows_with_more_trials_at_the_same_rate() -> None:
    widths = []
    for n in (3, 30, 300):
        interval = metrics.wilson(n, n)
        assert interval is not None and interval[1] == 1.0
        widths.append(interval[1] - interval[0])
    assert widths == sorted(widths, reverse=True)


def _row(**extra: Any) -> dict[str, Any]:
    return {"runs": 3, "recall": 1.0, "recall_ci": (0.4385, 1.0), "precision": None,
            "precision_ci": None, **extra}


def test_table_shows_the_interval_beside_the_proportion() -> None:
    table = report.table({"code_path": _row()})
    assert "| 1.00 [0.44, 1.00] |" in table
    assert "| n/a |" in table  # no spikes: no precision, and no interval either
