"""Test support: a recorded incident for the web page's tests (and its screenshots).

Twenty-five minutes of one service, ending a little before now so that the page's
relative presets show it: steady traffic at 10 requests/s with `model_forward` the hot
function; at SPIKE_AT a deploy of v2 whose requests take four times as long, its time
spent in a new function `render_json_slow`, while the (replayed) GPU throttles
thermally; a restart of the server halfway through the calm. Every other response is
streamed, so the page shows time to first byte too. Written through the
agent's own encoder and the collector's decoder into a DuckDB file, which a real
collector process then serves.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey, Telemetry
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from support.ingest_builder import StreamEncoder, stack
from support.telemetry_builder import engine_reading, event, gpu, host, request

S = NANOS_PER_SECOND
SERVICE = "checkout-model"
SPAN_S = 1500
SPIKE_AT = 1200  # seconds after the start
SPIKE_S = 60
RESTART_AT = 600
HOT = "render_json_slow"
FORWARD = stack("serve", "predict", "model_forward", file="app/model.py")
TOKENIZE = stack("serve", "predict", "tokenize", file="app/text.py")
SLOW = stack("serve", "respond", HOT, file="app/render.py")
HW_THERMAL = 0x40
# per 5 s scrape: (metric, value, count): 8 running, none waiting, 42% of the KV cache,
# 50 requests queued 5 ms and answered their first token in 40 ms on average
ENGINE = (("requests_running", 8.0, 0), ("requests_waiting", 0.0, 0), ("kv_cache_usage", 0.42, 0),
          ("queue_time_s", 0.25, 50), ("ttft_s", 2.0, 50), ("requests", 50.0, 0))


@dataclass(frozen=True)
class Incident:
    start_ns: int  # the recording's first window
    end_ns: int
    spike_start_ns: int
    spike_end_ns: int
    deploy_ns: int
    restart_ns: int

    def iso(self, ns: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // S))


def incident_times(now_ns: int | None = None) -> Incident:
    """The incident's times: it ends a minute (rounded to 10 s) before `now_ns`."""
    now = time.time_ns() if now_ns is None else now_ns
    end = (now // (10 * S)) * 10 * S - 60 * S
    start = end - SPAN_S * S
    return Incident(start, end, start + SPIKE_AT * S, start + (SPIKE_AT + SPIKE_S) * S,
                    start + (SPIKE_AT - 5) * S, start + RESTART_AT * S)


def _telemetry(at: int, base: int, incident: Incident, rng: random.Random) -> Telemetry:
    """Ten seconds of requests, GPU and host readings, from `at` seconds after the start."""
    spiking = SPIKE_AT <= at < SPIKE_AT + SPIKE_S
    offset = (incident.start_ns - base) / S  # the builders count from BASE_NS
    slow = 80 if spiking else 20
    latencies = [slow * rng.uniform(0.9, 1.1) for _ in range(100)]
    # every other response is streamed, its first byte after a quarter of its time
    reqs = tuple(request(offset + at + i / 10 + 0.05, latency_ms=ms, route="/v1/predict",
                         ttfb_ns=round(ms * 250_000) if i % 2 else None)
                 for i, ms in enumerate(latencies))
    gpus = tuple(gpu(offset + at + k, replayed=True, temperature_c=88.0 if spiking else 70.0,
                     slowdown_temperature_c=87.0, sm_clock_mhz=1200 if spiking else 1980,
                     clock_event_reasons=HW_THERMAL if spiking else 0)
                 for k in range(0, 10, 2))
    hosts = tuple(host(offset + at + k, cpu_pct=35.0 + (25.0 if spiking else 0.0) + rng.uniform(-3, 3),
                       psi_cpu_some=2.0 + (6.0 if spiking else 0.0)) for k in range(0, 10, 2))
    # the serving engine (agent --scrape), scraped every 5 s and flat through the spike: its
    # batch, queue and cache did not change, so none of its causes may explain it
    engine = tuple(engine_reading(offset + at + k, metric, value=value, count=count, interval_s=5.0,
                                  engine="vllm", model="checkout-llm")
                   for k in (0, 5) for metric, value, count in ENGINE)
    events = ()
    if at == SPIKE_AT - 10:
        events = (event(offset + SPIKE_AT - 5, version="v2", previous_version="v1"),)
    elif at == RESTART_AT:
        events = (event(offset + RESTART_AT, kind="restart", version="v1", pid=101, previous_pid=100),)
    return Telemetry(requests=reqs, gpu=gpus, host=hosts, events=events, engine=engine)


def fill_incident(db: Path, incident: Incident, seed: int = 14) -> None:
    """Write the incident into the DuckDB file `db`, and close it."""
    from support.ingest_builder import BASE_NS

    agent = StreamEncoder(agent_id="incident-agent", service=SERVICE, instance="pod-a",
                          labels={"version": "v1"})
    decoder = StreamDecoder()
    rng = random.Random(seed)
    batches = []
    for seq, at in enumerate(range(0, SPAN_S, 10), start=1):
        spiking = SPIKE_AT <= at < SPIKE_AT + SPIKE_S
        counts = {SampleKey(FORWARD): 700, SampleKey(TOKENIZE): 150}
        if spiking:
            counts[SampleKey(SLOW)] = 2400
        raw = agent.batch(seq, counts, start_ns=incident.start_ns + at * S,
                          telemetry=_telemetry(at, BASE_NS, incident, rng),
                          version="v2" if at >= SPIKE_AT - 5 else None)
        batches.append(decoder.decode(raw, incident.start_ns + (at + 10) * S))
    store = DuckDBStore(db)
    try:
        for i in range(0, len(batches), 30):
            store.commit(batches[i:i + 30])
    finally:
        store.close()
