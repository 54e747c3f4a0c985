"""The timeline the cause-ranking unit tests share: ten minutes of baseline, then a
one-minute spike whose onset is a second in, in steps of 10 s."""

from __future__ import annotations

from pyrometer.collector.analysis.detect import Spike

S = 1_000_000_000
STEP = 10 * S
T0 = 1_750_000_000 * S
START = T0 + 600 * S  # the spike: one minute after ten of baseline
END = START + 60 * S
ONSET = START + 1 * S
SPIKE = Spike(START, END, ONSET, START, 120.0, 45.0, 3.0, 20.0, 60.0)
