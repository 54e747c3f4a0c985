"""Test helper: telemetry records (the agent's domain values) with sane defaults.

Values are exact in float32 (71.5, not 71.3), so what comes back out of the protocol
equals what went in.
"""

from __future__ import annotations

from typing import Any

from pyrometer.agent.shared.model import (
    NANOS_PER_SECOND,
    AgentStats,
    EngineReading,
    Event,
    GpuReading,
    HostReading,
    ProcessReading,
    RequestRecord,
    Telemetry,
)
from support.ingest_builder import BASE_NS

S = NANOS_PER_SECOND
MS = 1_000_000


def gpu(at_s: float = 0.0, **fields: Any) -> GpuReading:
    values: dict[str, Any] = dict(
        index=0, uuid="GPU-0000", name="NVIDIA H100", temperature_c=71.5,
        sm_clock_mhz=1980, sm_clock_max_mhz=1980, clock_event_reasons=0, power_mw=400_000,
        power_limit_mw=700_000, memory_used_bytes=40 * 2**30, memory_total_bytes=80 * 2**30,
        utilization_gpu_pct=90, utilization_memory_pct=40, performance_state=0)
    values.update(fields)
    return GpuReading(time_ns=BASE_NS + round(at_s * S), **values)


def process(at_s: float = 0.0, **fields: Any) -> ProcessReading:
    values: dict[str, Any] = dict(
        pid=100, interval_s=1.0, cpu_user=0.75, cpu_system=0.25, rss_bytes=2 * 2**30,
        threads=12, ctx_switches_voluntary=100, ctx_switches_involuntary=5)
    values.update(fields)
    return ProcessReading(time_ns=BASE_NS + round(at_s * S), **values)


def host(at_s: float = 0.0, **fields: Any) -> HostReading:
    values: dict[str, Any] = dict(
        cpu_pct=50.0, cpu_count=16, memory_available_bytes=32 * 2**30,
        memory_total_bytes=64 * 2**30, load1=2.5, psi_cpu_some=1.5, psi_memory_some=0.0,
        psi_memory_full=0.0, psi_io_some=0.25, psi_io_full=0.0)
    values.update(fields)
    return HostReading(time_ns=BASE_NS + round(at_s * S), **values)


def request(at_s: float = 0.0, latency_ms: float = 10.0, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = dict(
        request_bytes=1000, response_bytes=5000, route="/v1/predict", method="POST",
        status=200)
    values.update(fields)
    return RequestRecord(end_ns=BASE_NS + round(at_s * S), latency_ns=round(latency_ms * MS),
                         **values)


def event(at_s: float = 0.0, kind: str = "deploy", **fields: Any) -> Event:
    return Event(time_ns=BASE_NS + round(at_s * S), kind=kind, **fields)


def agent_stats(at_s: float = 0.0, **fields: Any) -> AgentStats:
    values: dict[str, Any] = dict(
        cpu_cores=0.125, rss_bytes=80 * 2**20, queued_batches=3, spooled_batches=1,
        spool_bytes=4096, dropped_batches=2, dropped_records=7, reconnects=1, pyspy_restarts=0)
    values.update(fields)
    return AgentStats(time_ns=BASE_NS + round(at_s * S), **values)


def engine_reading(at_s: float = 0.0, metric: str = "queue_time_s", **fields: Any) -> EngineReading:
    values: dict[str, Any] = dict(value=2.5, interval_s=5.0, count=10, engine="vllm",
                                  model="llama")
    values.update(fields)
    return EngineReading(time_ns=BASE_NS + round(at_s * S), metric=metric, **values)


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def everything() -> Telemetry:
    """One valid record of every kind, a streamed request among them."""
    return Telemetry(
        gpu=(gpu(1, replayed=True),), process=(process(1),), host=(host(1),),
        requests=(request(1), request(2, ttfb_ns=3 * MS, chunk_gaps_us=(100, 250),
                                     chunk_gaps_dropped=1, app_size=42, source="proxy",
                                     trace_id=TRACE_ID)),
        events=(event(1, version="v2", previous_version="v1", pid=100, previous_pid=99,
                      attrs=(("commit", "abc"),)),),
        agent_stats=(agent_stats(1),),
        engine=(engine_reading(1), engine_reading(1, "requests_waiting", value=3.0, count=0)),
    )
