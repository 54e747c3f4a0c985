"""Spike detection on constructed latency series with known answers."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.collector.analysis.detect import Bucket, DetectConfig, SortedWindow, detect
from pyrometer.collector.analysis.robust import Baseline

S = 1_000_000_000
STEP = 10 * S
T0 = 1_750_000_000 * S
CONFIG = DetectConfig(step_ns=STEP, baseline_ns=600 * S)  # 10 min: 60 buckets


def series(values: list[float], count: int = 100) -> list[Bucket]:
    return [Bucket(T0 + i * STEP, T0 + (i + 1) * STEP, v, count) for i, v in enumerate(values)]


def noisy(n: int, level: float = 40.0, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [level * (1 + rng.gauss(0, 0.05)) for _ in range(n)]


def test_a_step_up_is_one_spike_with_start_end_peak_and_baseline() -> None:
    values = noisy(90)
    values[70:74] = [120.0, 150.0, 130.0, 125.0]
    found = detect(series(values), CONFIG, from_ns=T0 + 60 * STEP)
    assert found.status == "ok" and len(found.spikes) == 1
    spike = found.spikes[0]
    assert (spike.start_ns, spike.end_ns) == (T0 + 70 * STEP, T0 + 74 * STEP)
    assert spike.peak_ns == T0 + 71 * STEP and spike.peak_ms == 150.0
    assert 38 < spike.baseline_ms < 42 and spike.baseline_mad_ms > 0 and spike.z > 4
    assert spike.route is None


def test_null_series_has_no_spike() -> None:
    for seed in range(20):
        found = detect(series(noisy(200, seed=seed)), CONFIG, from_ns=T0)
        assert found.spikes == (), seed


def test_a_slow_ramp_is_not_a_spike() -> None:
    # 40 ms to 80 ms over 100 minutes: the trailing MAD widens with the rise
    rng = random.Random(3)
    values = [40.0 * (1 + i / 600) * (1 + rng.gauss(0, 0.05)) for i in range(600)]
    assert detect(series(values), CONFIG, from_ns=T0).spikes == ()


def test_a_quiet_endpoint_from_2ms_to_3ms_pages_nobody() -> None:
    values = [2.0 + 0.01 * (i % 3) for i in range(90)]
    values[70:80] = [3.0] * 10  # a huge z, but under the relative and absolute floors
    assert detect(series(values), CONFIG, from_ns=T0).spikes == ()


def test_too_little_data_for_a_baseline_says_so_and_detects_nothing() -> None:
    values = noisy(20)
    values[15] = 500.0
    found = detect(series(values), CONFIG, from_ns=T0)
    assert found.status == "insufficient_data" and found.spikes == ()
    assert found.without_baseline == 20 and found.evaluated == 0


def test_sparse_buckets_give_no_verdict() -> None:
    values = noisy(90)
    buckets = series(values)
    buckets[75] = Bucket(buckets[75].start_ns, buckets[75].end_ns, 900.0, 3)  # 3 requests
    assert detect(buckets, CONFIG, from_ns=T0).spikes == ()


def test_a_missing_bucket_does_not_split_a_spike() -> None:
    values = noisy(90)
    values[70:76] = [150.0] * 6
    buckets = [b for i, b in enumerate(series(values)) if i != 72]  # nothing recorded
    (spike,) = detect(buckets, CONFIG, from_ns=T0).spikes
    assert (spike.start_ns, spike.end_ns) == (T0 + 70 * STEP, T0 + 76 * STEP)


def test_a_long_spike_never_becomes_its_own_baseline() -> None:
    values = noisy(200)
    values[100:200] = [150.0] * 100  # longer than the 60-bucket baseline
    (spike,) = detect(series(values), CONFIG, from_ns=T0).spikes
    assert (spike.start_ns, spike.end_ns) == (T0 + 100 * STEP, T0 + 200 * STEP)


def test_spikes_before_from_are_baseline_only() -> None:
    values = noisy(120)
    values[65] = 200.0
    values[110] = 200.0
    found = detect(series(values), CONFIG, from_ns=T0 + 100 * STEP)
    assert [s.start_ns for s in found.spikes] == [T0 + 110 * STEP]


def test_percentile_floor_settings_are_configurable() -> None:
    values = noisy(90)
    values[80] = 50.0  # +25%: under the default 30% floor
    assert detect(series(values), CONFIG, from_ns=T0).spikes == ()
    loose = DetectConfig(step_ns=STEP, baseline_ns=600 * S, min_increase_ratio=0.1)
    assert len(detect(series(values), loose, from_ns=T0).spikes) == 1


def test_a_one_step_blip_at_a_fine_step_is_not_a_spike() -> None:
    fine = DetectConfig(step_ns=2 * S, baseline_ns=60 * S)
    values = noisy(120)
    values[80] = 200.0  # one 2 s bucket: a pause, not a slowdown
    values[100:106] = [150.0] * 6  # 12 s: a spike
    buckets = [Bucket(T0 + i * 2 * S, T0 + (i + 1) * 2 * S, v, 100) for i, v in enumerate(values)]
    (spike,) = detect(buckets, fine, from_ns=T0).spikes
    assert (spike.start_ns, spike.end_ns) == (T0 + 200 * S, T0 + 212 * S)


def test_a_slowdown_straddling_the_threshold_stays_one_spike() -> None:
    # A steady doubling whose 2 s percentiles wobble around the opening threshold: the
    # dips under it neither end the spike (hysteresis) nor join the baseline.
    fine = DetectConfig(step_ns=2 * S, baseline_ns=60 * S)
    values = noisy(60, level=14.0, seed=4)
    slow = [28.0, 31.0, 37.0, 27.0, 22.5, 23.5, 25.7, 26.5, 30.1, 21.7, 31.6, 24.0, 30.2,
            34.5, 29.7, 30.0, 27.3, 26.5, 25.8, 31.3, 36.2]
    values += slow + noisy(20, level=14.0, seed=5)
    buckets = [Bucket(T0 + i * 2 * S, T0 + (i + 1) * 2 * S, v, 80) for i, v in enumerate(values)]
    found = detect(buckets, fine, from_ns=T0)
    assert len(found.spikes) == 1, found.spikes
    spike = found.spikes[0]
    assert spike.start_ns == T0 + 60 * 2 * S and spike.end_ns == T0 + (60 + len(slow)) * 2 * S
    assert 12 < spike.baseline_ms < 16


def test_a_spike_ends_when_latency_is_back_near_its_baseline() -> None:
    values = noisy(90)
    values[70:75] = [120.0, 150.0, 60.0, 44.0, 130.0]  # 60: still well above; 44: back
    found = detect(series(values), CONFIG, from_ns=T0 + 60 * STEP)
    assert [(s.start_ns, s.end_ns) for s in found.spikes] == [
        (T0 + 70 * STEP, T0 + 73 * STEP), (T0 + 74 * STEP, T0 + 75 * STEP)]


def test_a_fifteen_second_spike_on_five_second_steps_is_found_whole() -> None:
    step = 5 * S
    config = DetectConfig(step_ns=step, baseline_ns=300 * S)  # 60 buckets of 5 s
    values = noisy(100, seed=4)
    values[80:83] = [110.0, 140.0, 120.0]  # 15 s
    buckets = [Bucket(T0 + i * step, T0 + (i + 1) * step, v, 40) for i, v in enumerate(values)]
    (spike,) = detect(buckets, config, from_ns=T0 + 60 * step).spikes
    assert (spike.start_ns, spike.end_ns) == (T0 + 80 * step, T0 + 83 * step)


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(st.one_of(finite, st.sampled_from([0.0, 1.0, 2.5])), min_size=1, max_size=80))
def test_a_baseline_of_sorted_values_is_the_one_of_the_values(values: list[float]) -> None:
    assert Baseline.of_sorted(sorted(values), floor_rel=0.02) == Baseline.of(values, floor_rel=0.02)
    assert Baseline.of_sorted(sorted(values), floor_abs=3.0) == Baseline.of(values, floor_abs=3.0)


_steps = st.lists(st.one_of(st.tuples(st.just("add"), st.one_of(finite, st.just(1.0))),
                            st.tuples(st.just("start"), st.integers(0, 60))), max_size=120)


@settings(max_examples=200)
@given(_steps)
def test_a_sorted_window_holds_the_values_since_its_start_in_order(
        steps: list[tuple[str, float]]) -> None:
    # what detect() asks of it: values added at the back, a start that moves forward
    # (or is asked to move back, which changes nothing), the baseline of what is left
    window = SortedWindow()
    values: list[float] = []
    first = 0
    for op, arg in steps:
        if op == "add":
            window.add(arg)
            values.append(arg)
        else:  # an index into what was added, as detect's bisect gives
            index = min(int(arg), len(values))
            window.start_at(index)
            first = max(first, index)
        assert window.ordered == sorted(values[first:])
        if window.ordered:
            assert Baseline.of_sorted(window.ordered, floor_rel=0.02) == Baseline.of(
                values[first:], floor_rel=0.02)
