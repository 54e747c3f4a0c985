"""Decoding telemetry records: each kind round trips; a bad record is dropped and counted
while the rest of the batch is kept; a dictionary mismatch still rejects the batch."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pyrometer.agent.shared.clock_events import CLOCK_EVENT_REASONS, KNOWN_CLOCK_EVENT_MASK
from pyrometer.agent.shared.model import SampleKey, Telemetry
from pyrometer.collector.errors import BatchLimitError, InvalidBatchError
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.ingest.limits import DecodeLimits
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, stack
from support.telemetry_builder import (
    MS,
    S,
    agent_stats,
    engine_reading,
    event,
    everything,
    gpu,
    host,
    process,
    request,
)

COUNTS = {SampleKey(stack("main", "serve")): 3}


def test_every_kind_decodes_to_the_values_sent() -> None:
    sent = everything()
    out = StreamDecoder().decode(StreamEncoder().batch(1, COUNTS, telemetry=sent), NOW_NS)
    assert out.telemetry == sent and out.rejected == {}
    assert out.telemetry.gpu[0].replayed  # the replay flag survives
    assert out.sample_count == 3


def test_telemetry_without_a_window() -> None:
    sent = Telemetry(requests=(request(),))
    out = StreamDecoder().decode(StreamEncoder().batch(1, telemetry=sent), NOW_NS)
    assert out.window is None and out.telemetry == sent


def test_float32_values_come_back_as_the_agent_wrote_them() -> None:
    sent = Telemetry(gpu=(gpu(temperature_c=71.3),), host=(host(cpu_pct=12.7, load1=0.1),))
    out = StreamDecoder().decode(StreamEncoder().batch(1, telemetry=sent), NOW_NS)
    assert out.telemetry.gpu[0].temperature_c == 71.3
    assert (out.telemetry.host[0].cpu_pct, out.telemetry.host[0].load1) == (12.7, 0.1)


def test_later_batches_resolve_request_strings_sent_earlier() -> None:
    enc, dec = StreamEncoder(), StreamDecoder()
    dec.decode(enc.batch(1, telemetry=Telemetry(requests=(request(),))), NOW_NS)
    second = enc.batch(2, telemetry=Telemetry(requests=(request(1, route="/v1/predict"),)))
    assert not second.dictionary.strings  # nothing new on the stream
    assert dec.decode(second, NOW_NS).telemetry.requests[0].route == "/v1/predict"


FAR_FUTURE = (NOW_NS - BASE_NS) / S + 2 * 3600
BAD = [  # (kind, reason, bad record)
    ("gpu", "temperature_out_of_range", gpu(temperature_c=250.0)),
    ("gpu", "temperature_out_of_range", gpu(memory_temperature_c=float("nan"))),
    ("gpu", "temperature_out_of_range", gpu(slowdown_temperature_c=-60.0)),
    ("gpu", "percent_out_of_range", gpu(utilization_gpu_pct=101)),
    ("gpu", "unknown_clock_event_reason", gpu(clock_event_reasons=0x800 | 0x4)),
    ("gpu", "size_out_of_range", gpu(memory_used_bytes=2**51)),
    ("gpu", "performance_state_out_of_range", gpu(performance_state=16)),
    ("gpu", "gpu_index_out_of_range", gpu(index=5000)),
    ("gpu", "string_too_long", gpu(name="x" * 5000)),
    ("gpu", "time_out_of_range", gpu(FAR_FUTURE)),
    ("gpu", "clock_out_of_range", gpu(sm_clock_mhz=2**31)),
    ("gpu", "power_out_of_range", gpu(power_limit_mw=2**31)),
    ("process", "count_out_of_range", process(ctx_switches_involuntary=2**41)),
    ("process", "size_out_of_range", process(rss_bytes=2**51)),
    ("host", "size_out_of_range", host(memory_total_bytes=2**51)),
    ("event", "pid_out_of_range", event(previous_pid=-1)),
    ("event", "string_too_long", event(version="v" * 4097)),
    ("request", "pid_out_of_range", request(pid=-1)),
    ("process", "interval_out_of_range", process(interval_s=0.0)),
    ("process", "cpu_out_of_range", process(cpu_user=-0.5)),
    ("process", "pid_out_of_range", process(pid=-3)),
    ("process", "cpu_out_of_range", process(run_queue_wait=-0.25)),
    ("host", "percent_out_of_range", host(cpu_pct=150.0)),
    ("host", "percent_out_of_range", host(psi_io_full=100.5)),
    ("host", "load_out_of_range", host(load1=-1.0)),
    ("request", "negative_latency", request(latency_ms=-1)),
    ("request", "negative_ttfb", request(ttfb_ns=-5)),
    ("request", "size_out_of_range", request(response_bytes=2**41)),
    ("request", "too_many_chunk_gaps", request(chunk_gaps_us=(1,) * 11)),
    ("request", "status_out_of_range", request(status=1000)),
    ("request", "bad_trace_id", request(trace_id="not a trace id")),
    ("request", "latency_out_of_range", request(latency_ms=2 * 86_400_000)),
    ("request", "time_out_of_range", dataclasses.replace(request(), end_ns=BASE_NS // 10**9)),
    ("event", "empty_kind", event(kind="")),
    ("event", "too_many_attrs", event(attrs=tuple((f"k{i}", "v") for i in range(65)))),
    ("event", "empty_attr_key", event(attrs=(("", "v"),))),
    ("agent_stats", "cpu_out_of_range", agent_stats(cpu_cores=float("nan"))),
    ("agent_stats", "cpu_out_of_range", agent_stats(cpu_cores=-1.0)),
    ("agent_stats", "size_out_of_range", agent_stats(rss_bytes=2**51)),
    ("agent_stats", "spooled_exceeds_queued", agent_stats(queued_batches=1, spooled_batches=2)),
    ("agent_stats", "count_out_of_range", agent_stats(dropped_batches=2**63)),
    ("agent_stats", "time_out_of_range", agent_stats(FAR_FUTURE)),
    ("engine", "unknown_engine_metric", engine_reading(metric="queue_time_ms")),
    ("engine", "value_out_of_range", engine_reading(value=float("nan"))),
    ("engine", "value_out_of_range", engine_reading(value=-1.0)),
    ("engine", "fraction_out_of_range", engine_reading(metric="kv_cache_usage", value=87.0)),
    ("engine", "interval_out_of_range", engine_reading(interval_s=0.0)),
    ("engine", "count_out_of_range", engine_reading(count=2**50)),
    ("engine", "time_out_of_range", engine_reading(FAR_FUTURE)),
]
FIELD = {"gpu": "gpu", "process": "process", "host": "host", "request": "requests",
         "event": "events", "agent_stats": "agent_stats", "engine": "engine"}


@pytest.mark.parametrize(("kind", "reason", "bad"), BAD,
                         ids=[f"{k}-{r}-{i}" for i, (k, r, _) in enumerate(BAD)])
def test_bad_record_is_dropped_counted_and_the_rest_kept(kind: str, reason: str, bad: Any) -> None:
    good = everything()
    records = getattr(good, FIELD[kind])
    sent = dataclasses.replace(good, **{FIELD[kind]: (records[0], bad, *records[1:])})
    dec = StreamDecoder(DecodeLimits(max_chunk_gaps=10))
    out = dec.decode(StreamEncoder().batch(1, COUNTS, telemetry=sent), NOW_NS)
    assert out.rejected == {(kind, reason): 1}
    assert out.telemetry == good  # every other record, of every kind, is kept
    assert out.sample_count == 3  # and so are the stacks


def test_rejections_are_counted_per_reason() -> None:
    sent = Telemetry(requests=(request(latency_ms=-1), request(latency_ms=-2), request()),
                     gpu=(gpu(clock_event_reasons=1 << 40),))
    out = StreamDecoder().decode(StreamEncoder().batch(1, telemetry=sent), NOW_NS)
    assert out.rejected == {("request", "negative_latency"): 2,
                            ("gpu", "unknown_clock_event_reason"): 1}
    assert len(out.telemetry.requests) == 1 and not out.telemetry.gpu


def test_known_clock_event_reasons_are_nvml_bits() -> None:
    assert KNOWN_CLOCK_EVENT_MASK == 0x7FF
    assert CLOCK_EVENT_REASONS["sw_power_cap"] == 0x4
    assert CLOCK_EVENT_REASONS["hw_thermal_slowdown"] == 0x40
    every = Telemetry(gpu=(gpu(clock_event_reasons=KNOWN_CLOCK_EVENT_MASK),))
    out = StreamDecoder().decode(StreamEncoder().batch(1, telemetry=every), NOW_NS)
    assert out.rejected == {} and len(out.telemetry.gpu) == 1


def test_undefined_request_string_rejects_the_whole_batch() -> None:
    enc, dec = StreamEncoder(), StreamDecoder()
    batch = enc.batch(1, COUNTS, telemetry=Telemetry(requests=(request(),)))
    batch.requests[0].route = 999
    before = dec.table_sizes
    with pytest.raises(InvalidBatchError, match="request route string id 999"):
        dec.decode(batch, NOW_NS)
    assert dec.table_sizes == before


def test_too_many_records_is_a_size_limit() -> None:
    sent = Telemetry(host=tuple(host(i) for i in range(3)))
    with pytest.raises(BatchLimitError, match="host records"):
        StreamDecoder(DecodeLimits(max_records=2)).decode(
            StreamEncoder().batch(1, telemetry=sent), NOW_NS)


def test_request_times_and_sizes_at_their_bounds_are_kept() -> None:
    edge = request(latency_ms=0, ttfb_ns=0, request_bytes=2**40, response_bytes=0,
                   chunk_gaps_us=(0,) * 10, status=0, app_size=2**63 - 1)
    out = StreamDecoder(DecodeLimits(max_chunk_gaps=10)).decode(
        StreamEncoder().batch(1, telemetry=Telemetry(requests=(edge,))), NOW_NS)
    assert out.rejected == {} and out.telemetry.requests == (edge,)
    assert out.telemetry.requests[0].latency_ns == 0 * MS
