"""Spike analysis: detect latency spikes against a robust trailing baseline, rank causes.

Everything here but `gather` is pure: detection and scoring take plain series values
(dataclasses of numbers) and return values, so they are tested on constructed series
with known answers. `gather` is the thin shell that reads those values from a Store.
"""
