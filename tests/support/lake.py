"""What the lake's tests share: agents' batches as ingest hands them to a store, one fill of
batches (a retried one and telemetry among them), and every answer a store gives for it,
so that a lake on a local path and one on S3 are held to the embedded store alike."""

from __future__ import annotations

import duckdb

from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.lake.extensions import extension_file
from pyrometer.collector.storage.reads import SeriesQuery
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, stack
from support.telemetry_builder import everything

S = NANOS_PER_SECOND
WINDOW = (BASE_NS, BASE_NS + 120 * S)
MAIN = stack("main", "serve", "forward")
IDLE = stack("main", "wait")
TOKENIZE = stack("main", "serve", "tokenize")


def missing_extensions(*names: str) -> str | None:
    """Why the lake's tests cannot run in this virtualenv, or None when they can."""
    missing = [name for name in names if extension_file(name) is None]
    if not missing:
        return None
    return (f"DuckDB {duckdb.__version__} has no {'/'.join(missing)} extension wheel here: "
            "the lake's tests run in .venv-lake (`make test-lake` installs pyrometer[lake] there)")


class Agent:
    """Batches of one agent as the ingest server hands them to a store."""

    def __init__(self, agent_id: str) -> None:
        self.encoder = StreamEncoder(agent_id=agent_id)
        self.decoder = StreamDecoder()

    def batch(self, seq: int, counts: dict[SampleKey, int], **window: object) -> DecodedBatch:
        return self.decoder.decode(self.encoder.batch(seq, counts, **window), NOW_NS)  # type: ignore[arg-type]


def fill() -> list[list[DecodedBatch]]:
    """Three commits of two agents' batches, the last a retry of one already stored."""
    a, b = Agent("a"), Agent("b")
    return [
        [a.batch(1, {SampleKey(MAIN, "MainThread"): 5, SampleKey(IDLE, "MainThread"): 2},
                 telemetry=everything())],
        [b.batch(1, {SampleKey(MAIN, "MainThread"): 4, SampleKey(TOKENIZE, "w"): 9}),
         a.batch(2, {SampleKey(TOKENIZE, "w"): 1}, start_ns=BASE_NS + 10 * S, version="v2")],
        [a.batch(2, {SampleKey(TOKENIZE, "w"): 1}, start_ns=BASE_NS + 10 * S, version="v2")],
    ]


def answers(store: DuckDBStore) -> dict[str, object]:
    """Every read the collector makes of a store, over the window of `fill`."""
    query = SeriesQuery("svc", *WINDOW, step_ns=30 * S)
    sets = [summary.label_set for summary in store.label_sets(*WINDOW)]
    return {
        "profile": store.profile("svc", *WINDOW),
        "profile_v2": store.profile("svc", *WINDOW, version="v2"),
        "services": store.services(),
        "labels": store.profile_labels("svc", *WINDOW),
        "label_sets": store.label_sets(*WINDOW),
        "select": store.select_profile(*WINDOW, sets),
        "steps": store.select_steps(*WINDOW, 30 * S, sets),
        "latency": store.latency(query), "gpu": store.gpu(query), "host": store.host(query),
        "process": store.process(query), "events": store.events("svc", *WINDOW),
        "requests": store.request_records("svc", *WINDOW),
        "engine": store.engine_readings("svc", *WINDOW),
        "costs": store.version_costs("svc", *WINDOW),
        "routes": store.routes("svc", *WINDOW),
    }
