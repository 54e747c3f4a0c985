"""LakeStore on a real DuckLake: a PostgreSQL catalog started here on 127.0.0.1 (Debian's
server, see support/postgres.py) and Parquet files in a local data path.

Runs in .venv-lake (`make test-lake`), whose DuckDB has the lake's extensions; elsewhere
the module skips and says why. Each test gets a database of its own in one cluster.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyrometer.agent.shared.model import SampleKey
from pyrometer.collector.procs import python_env, start
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.lake.backend import LakeStore
from pyrometer.collector.storage.store import BatchOutcome
from support.ingest_builder import BASE_NS, stack
from support.lake import IDLE, MAIN, WINDOW, Agent, S, answers, fill, missing_extensions
from support.postgres import Postgres

pytestmark = [pytest.mark.lake, pytest.mark.integration]

if (why := missing_extensions("ducklake", "postgres_scanner")) is not None:
    pytest.skip(why, allow_module_level=True)


@dataclass
class Lake:
    catalog: str
    data_path: str

    def open(self) -> LakeStore:
        return LakeStore(self.catalog, self.data_path)


@pytest.fixture
def lake(postgres: Postgres, tmp_path: Path) -> Lake:
    catalog = postgres.create_database(f"lake_{uuid.uuid4().hex[:12]}")
    return Lake(catalog, str(tmp_path / "data") + "/")


@pytest.fixture
def collectors(lake: Lake) -> Iterator[tuple[LakeStore, LakeStore]]:
    """Two collectors on the same lake."""
    a = lake.open()
    b = lake.open()
    yield a, b
    a.close()
    b.close()


def test_the_lake_answers_as_the_embedded_store(collectors: tuple[LakeStore, LakeStore],
                                                tmp_path: Path) -> None:
    local = DuckDBStore(tmp_path / "local.duckdb")
    lake_a, lake_b = collectors
    # the same batches (a retried one among them) to the file and, spread over two
    # collectors, to the lake
    for group in fill():
        local.commit(group)
    for n, group in enumerate(fill()):
        (lake_a if n % 2 == 0 else lake_b).commit(group)
    try:
        expected = answers(local)
        assert expected["profile"].samples  # type: ignore[attr-defined]
        assert answers(lake_a) == expected
        assert answers(lake_b) == expected
    finally:
        local.close()


def test_a_batch_retried_on_another_collector_is_dropped(
        collectors: tuple[LakeStore, LakeStore]) -> None:
    a, b = collectors
    agent = Agent("moved")
    first = agent.batch(1, {SampleKey(MAIN): 5, SampleKey(IDLE): 2})
    assert a.commit([first]).outcomes == (BatchOutcome.STORED,)
    # the ack was lost: the agent reconnects through the load balancer to b and retries
    assert b.commit([first]).outcomes == (BatchOutcome.DUPLICATE,)
    second = agent.batch(2, {SampleKey(MAIN): 1}, start_ns=BASE_NS + 10 * S)
    assert b.commit([second]).outcomes == (BatchOutcome.STORED,)
    assert a.commit([second, first]).outcomes == (BatchOutcome.DUPLICATE,) * 2
    # b had not seen a's stacks and frames, so it stored its own copies: read once
    rows = a.table_rows()
    assert rows["stacks"] == 2 + 1 and rows["frames"] == 4 + 3
    for store in (a, b):
        assert store.profile("svc", *WINDOW).samples == ((MAIN, 6), (IDLE, 2))
        [summary] = store.services()
        assert summary.samples == 8


def _race(stores: tuple[LakeStore, LakeStore], batch: DecodedBatch) -> list[BatchOutcome]:
    """Both stores commit `batch` at the same moment; their outcomes."""
    start = threading.Barrier(len(stores))
    outcomes: list[BatchOutcome] = []

    def commit(store: LakeStore) -> None:
        start.wait()
        outcomes.extend(store.commit([batch]).outcomes)

    threads = [threading.Thread(target=commit, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_racing_collectors_store_a_batch_exactly_once(
        collectors: tuple[LakeStore, LakeStore]) -> None:
    agent = Agent("raced")
    rounds = 4
    for seq in range(1, rounds + 1):
        batch = agent.batch(seq, {SampleKey(MAIN): 1}, start_ns=BASE_NS + seq * 10 * S)
        # the loser of the compare-and-set runs again and finds the batch stored
        assert sorted(o.value for o in _race(collectors, batch)) == ["duplicate", "stored"]
    for store in collectors:
        assert store.profile("svc", *WINDOW).samples == ((MAIN, rounds),)


def test_a_restarted_collector_reads_what_was_committed(lake: Lake) -> None:
    first = lake.open()
    agent = Agent("a")
    first.commit([agent.batch(1, {SampleKey(MAIN): 3})])
    first.close()
    again = lake.open()
    try:
        assert again.profile("svc", *WINDOW).samples == ((MAIN, 3),)
        assert again.commit([agent.batch(1, {SampleKey(MAIN): 3})]).outcomes == (
            BatchOutcome.DUPLICATE,)
    finally:
        again.close()


def _http(url: str, body: dict[str, object] | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_collectors_started_on_one_lake_answer_for_each_other(lake: Lake, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "pyrometer.agent.cli", "collector", "--lake", lake.catalog,
           "--data-path", lake.data_path, "--grpc-listen", "127.0.0.1:0",
           "--http-listen", "127.0.0.1:0"]
    ready = r"API on (?P<http>http://\S+) .*, lake postgres://"
    children = [start(f"collector-{n}", cli, ready, tmp_path, env=python_env()) for n in "ab"]
    try:
        a, b = (child.ready.group("http") for child in children)
        _http(f"{a}/api/v1/events", {"service": "svc", "kind": "deploy", "version": "v7",
                                      "time": "2025-06-15T15:00:00Z"})
        listing = _http(f"{b}/api/v1/events?service=svc&from=2025-06-15T14:00:00Z"
                        "&to=2025-06-15T16:00:00Z")
        assert [e["version"] for e in listing["events"]] == ["v7"]  # type: ignore[index]
    finally:
        for child in children:
            assert child.stop() == 0, child.output()


def test_collectors_commit_side_by_side_without_conflicts(
        collectors: tuple[LakeStore, LakeStore]) -> None:
    """Each agent on its own collector, both committing flat out: once each has claimed
    its agent, no commit conflicts with the other's (they once all took turns on the
    high-water marks, and a collector could starve)."""
    stores = collectors
    agents = [Agent(f"side-{i}") for i in range(2)]
    conflicts: list[list[int]] = [[], []]

    def write(i: int) -> None:
        for seq in range(1, 61):
            counts = {SampleKey(stack("main", f"op{k}"), "MainThread"): seq for k in range(40)}
            report = stores[i].commit([agents[i].batch(seq, counts, start_ns=BASE_NS + seq * S)])
            conflicts[i].append(report.conflicts)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # the first commits may meet the other's claim; none after
    assert [sum(c[2:]) for c in conflicts] == [0, 0], conflicts
    total = stores[0].profile("svc", *WINDOW)
    assert sum(n for _, n in total.samples) == 2 * 40 * sum(range(1, 61))


def test_an_agent_moving_between_collectors_is_stored_once(
        collectors: tuple[LakeStore, LakeStore]) -> None:
    """Each batch to one collector and its retry to the other, the agent's stream moving
    back and forth: every retry is a duplicate, every batch stored once."""
    a, b = collectors
    agent = Agent("mover")
    expected = 0
    for seq in range(1, 13):
        batch = agent.batch(seq, {SampleKey(MAIN, "MainThread"): seq}, start_ns=BASE_NS + seq * S)
        first, second = (a, b) if seq % 3 else (b, a)
        assert first.commit([batch]).outcomes == (BatchOutcome.STORED,)
        assert second.commit([batch]).outcomes == (BatchOutcome.DUPLICATE,)
        expected += seq
    for store in (a, b):
        assert sum(n for _, n in store.profile("svc", *WINDOW).samples) == expected
