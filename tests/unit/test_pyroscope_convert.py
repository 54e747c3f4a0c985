"""Pyroscope uploads to ingest batches (collector/ingest/pyroscope.py, pprof_read.py): pure."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Frame
from pyrometer.collector.errors import BatchLimitError, InvalidBatchError
from pyrometer.collector.ingest import pyroscope
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.ingest.pprof_read import UnsupportedProfile, inflate, read_pprof
from support.ingest_builder import BASE_NS, NOW_NS
from support.pprof_builder import pprof

LIMITS = DecodeLimits()
SPAN = 10 * NANOS_PER_SECOND


def test_name_gives_service_kind_and_labels() -> None:
    labels, kind = pyroscope.parse_name("my.app.cpu{version=1.2, instance=pod-a,region=eu}")
    assert (labels.service, kind, labels.instance) == ("my.app", "cpu", "pod-a")
    assert labels.labels == (("region", "eu"), ("version", "1.2"))
    assert pyroscope.parse_name("plain")[0].service == "plain"
    assert pyroscope.parse_name("svc.wall")[1] == "wall"


@pytest.mark.parametrize("name", ["", ".cpu", "app{x}", "app{=v}", "app{a=1,a=2}", "a{b}c"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidBatchError):
        pyroscope.parse_name(name)


def test_kinds() -> None:
    assert pyroscope.check_kind("cpu") is False
    assert pyroscope.check_kind("wall") is True
    with pytest.raises(UnsupportedProfile):
        pyroscope.check_kind("alloc_space")


def test_series_labels_drop_private_ones_and_need_a_service() -> None:
    labels = pyroscope.series_labels([("__name__", "process_cpu"), ("service_name", "s"),
                                      ("version", "2"), ("instance", "i")])
    assert labels == pyroscope.SeriesLabels("s", "i", (("version", "2"),))
    with pytest.raises(InvalidBatchError, match="service_name"):
        pyroscope.series_labels([("version", "2")])


def test_folded_counts_per_stack() -> None:
    counts = pyroscope.read_folded(b"main;work 3\nmain;work 2\n\nmain;idle 1\n", LIMITS)
    work = (Frame("main", "", 0), Frame("work", "", 0))
    assert counts[(work, "")] == 5 and sum(counts.values()) == 6


@pytest.mark.parametrize("body", [b"main;work\n", b"main;work x\n", b"main -1\n", b"\xff 1\n"])
def test_bad_folded_lines_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidBatchError):
        pyroscope.read_folded(body, LIMITS)


def test_pprof_cpu_nanoseconds_become_sample_counts() -> None:
    raw = pprof({("main", "work"): 30, ("main",): 2}, time_ns=BASE_NS, duration_ns=SPAN,
                thread="MainThread")
    samples = read_pprof(raw, sample_rate=None, limit=1 << 20)
    assert samples.total == 32 and samples.rate_hz == 100.0
    assert (samples.start_ns, samples.duration_ns) == (BASE_NS, SPAN)
    (stack, thread), = [key for key, n in samples.counts.items() if n == 30]
    assert [f.name for f in stack] == ["main", "work"] and thread == "MainThread"
    assert stack[0] == Frame("main", "app.py", 1)


def test_pprof_counts_and_unsupported_types() -> None:
    counted = pprof({("a",): 7}, time_ns=BASE_NS, duration_ns=SPAN, sample_type=("samples", "count"))
    assert read_pprof(counted, sample_rate=None, limit=1 << 20).total == 7
    memory = pprof({("a",): 7}, time_ns=BASE_NS, duration_ns=SPAN, sample_type=("alloc_space", "bytes"))
    with pytest.raises(UnsupportedProfile):
        read_pprof(memory, sample_rate=None, limit=1 << 20)


def test_gzip_bombs_and_torn_gzip_are_refused() -> None:
    with pytest.raises(BatchLimitError):
        inflate(gzip.compress(b"\0" * 100_000), 1000, "body")
    with pytest.raises(InvalidBatchError):
        inflate(gzip.compress(b"x" * 1000)[:20], 1 << 20, "body")


def test_batch_passes_the_ingest_decoder_with_labels_and_threads() -> None:
    labels, _ = pyroscope.parse_name("svc.cpu{version=3,instance=i1,team=ml}")
    samples = read_pprof(pprof({("main", "work"): 4}, time_ns=BASE_NS, duration_ns=SPAN, thread="T"),
                         sample_rate=None, limit=1 << 20)
    window = pyroscope.Window(BASE_NS, BASE_NS + SPAN, 100.0, False)
    decoded = pyroscope.decode(pyroscope.to_batch(labels, samples.counts, window, "a1"), LIMITS, NOW_NS)
    assert decoded.sample_count == 4
    assert (decoded.source.service, decoded.source.instance, decoded.source.version) == ("svc", "i1", "3")
    assert decoded.source.labels == (("team", "ml"),)
    assert decoded.window is not None and decoded.window.threads == ("T",)


def test_the_ingest_limits_apply() -> None:
    labels = pyroscope.SeriesLabels("svc")
    deep = {(tuple(Frame(f"f{i}", "", 0) for i in range(600)), ""): 1}
    window = pyroscope.Window(BASE_NS, BASE_NS + SPAN, 100.0, False)
    with pytest.raises(BatchLimitError, match="stack depth"):
        pyroscope.decode(pyroscope.to_batch(labels, deep, window, "a1"), LIMITS, NOW_NS)
    later = NOW_NS + 7200 * NANOS_PER_SECOND
    future = pyroscope.Window(later, later + NANOS_PER_SECOND, 100.0, False)
    with pytest.raises(InvalidBatchError, match="future"):
        pyroscope.decode(pyroscope.to_batch(labels, {((), ""): 1}, future, "a1"), LIMITS, NOW_NS)


@given(st.binary(max_size=400))
def test_any_bytes_either_read_or_are_refused_cleanly(data: bytes) -> None:
    for raw in (data, gzip.compress(data)):
        try:
            read_pprof(raw, sample_rate=None, limit=1 << 16)
        except (InvalidBatchError, UnsupportedProfile):
            pass
    try:
        pyroscope.read_folded(data, LIMITS)
    except InvalidBatchError:
        pass
