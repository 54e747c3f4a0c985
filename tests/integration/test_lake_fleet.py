"""Three collector processes on one DuckLake behind a load balancer, as a fleet runs them:
agents reconnect between collectors mid-run and retry what was not acknowledged, one
collector is SIGKILLed while a commit of its is open in the catalog, and maintenance
runs every second under the write load.

At the end every acknowledged batch is stored exactly once (the simulated agents' real
Shippers say which samples each held), the surviving collectors serve the same flame
graph, and their maintenance passes ran without an error.

Runs in .venv-lake (`make test-lake`): a PostgreSQL catalog started here on 127.0.0.1,
Parquet in a local data path.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import duckdb
import psutil
import pytest

from pyrometer.collector.procs import Child, python_env, start
from pyrometer.collector.storage.lake import extensions
from pyrometer.collector.storage.lake.backend import LakeStore
from support.balancer import Balancer
from support.lake import missing_extensions
from support.postgres import Postgres
from support.sim_agents import Sim, sim, until

pytestmark = [pytest.mark.lake, pytest.mark.integration]

if reason := missing_extensions("ducklake", "postgres_scanner"):
    pytest.skip(reason, allow_module_level=True)

CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
READY = r"ingest on (?P<grpc>\S+) \(gRPC\), API on (?P<http>http://\S+) "


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        return str(response.read().decode())


def _after_a_pass(url: str, timeout_s: float = 180.0) -> str:
    """The collector's /metrics once it has ended a maintenance pass (whatever its result).

    A pass under the write load can outlast the run: it retries a step that lost to a
    commit, with a pause each time, and counts itself only at its end."""
    deadline = time.monotonic() + timeout_s
    while True:
        page = _get(f"{url}/metrics")
        if _metric(page, "pyrometer_lake_maintenance_runs_total") or time.monotonic() > deadline:
            return page
        time.sleep(0.2)


def _metric(text: str, name: str) -> dict[str, float]:
    """Every sample of `name` in a /metrics page, by its label text."""
    return {labels: float(value) for labels, value in
            re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)}


class Fleet:
    def __init__(self, pg: Postgres, tmp: Path, collectors: int, sims: int) -> None:
        self.pg, self.tmp = pg, tmp
        self.database = f"lake_{uuid.uuid4().hex[:12]}"
        self.catalog = pg.create_database(self.database)
        self.data_path = f"{tmp / 'data'}/"
        argv = CLI + ["collector", "--lake", self.catalog, "--data-path", self.data_path,
                      "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                      "--maintenance-interval", "1s"]
        # one at a time: the first creates the lake's tables, the others find them
        self.collectors: list[Child] = [start(f"collector-{n}", argv, READY, tmp,
                                              env=python_env()) for n in range(collectors)]
        self.balancer = Balancer([c.ready.group("grpc") for c in self.collectors], fronts=sims)
        self._activity = duckdb.connect(config={"autoinstall_known_extensions": False,
                                                "autoload_known_extensions": False})
        extensions.load(self._activity, extensions.CATALOG)
        self._activity.execute(f"ATTACH {extensions.literal(pg.url())} AS pg (TYPE postgres)")
        self.sims: list[Sim] = [sim(f"sim-{i}", address, tmp / f"spool-{i}")
                                for i, address in enumerate(self.balancer.addresses)]

    def acked(self) -> int:
        return sum(s.shipper.stats.acked for s in self.sims)

    def open_commit(self, victim: Child) -> str | None:
        """The catalog statement of a transaction `victim` has open now, if any."""
        ports = [c.laddr.port for c in psutil.Process(victim.proc.pid).net_connections("tcp")
                 if c.raddr and c.raddr.port == self.pg.port]
        if not ports:
            return None
        # through DuckDB's postgres extension: a query takes a millisecond or two, where
        # a psql process a poll would miss most commits
        sql = ("SELECT query, client_port FROM pg_stat_activity WHERE datname = "
               f"'{self.database}' AND xact_start IS NOT NULL AND state <> 'idle'")
        found = self._activity.execute(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 60) "
            "FROM postgres_query('pg', $sql) WHERE client_port IN (SELECT unnest($ports)) "
            "AND query ILIKE '%insert%' LIMIT 1", {"sql": sql, "ports": ports}).fetchone()
        return str(found[0]) if found else None

    def stop_all(self) -> None:
        for child in self.collectors:
            child.stop(signal.SIGKILL)


async def _run(fleet: Fleet) -> str:
    """The load, two reconnect storms and a kill mid-commit; returns what it caught."""
    await fleet.balancer.start()
    stop = asyncio.Event()
    shipping = [asyncio.create_task(s.shipper.run()) for s in fleet.sims]
    # 40 windows a second in all: the three collectors keep up (their commits take turns
    # on agent_hwm, docs/lake.md), so closing the agents does not wait on a backlog
    producing = [asyncio.create_task(s.produce(stop, 0.1)) for s in fleet.sims]

    async def more_acks() -> None:
        acked = fleet.acked()
        await until(lambda: fleet.acked() >= acked + 10 * len(fleet.sims), timeout=180)

    await more_acks()
    fleet.balancer.drop()  # every agent reconnects, most to another collector
    await more_acks()
    # the victim is serving agents when it dies, and one of its transactions is open in
    # the catalog with an INSERT under way: its commit of their batches, most likely
    serving = fleet.balancer.serving()
    victim = next(c for c in fleet.collectors if c.ready.group("grpc") in serving)
    caught = None
    deadline = time.monotonic() + 120
    while caught is None and time.monotonic() < deadline:
        caught = await asyncio.to_thread(fleet.open_commit, victim)
    victim.stop(signal.SIGKILL, timeout=30)
    await more_acks()
    fleet.balancer.drop()
    await more_acks()
    stop.set()
    await asyncio.gather(*producing)
    for s in fleet.sims:
        await s.shipper.close()
    await asyncio.wait_for(asyncio.gather(*shipping), 180)
    await fleet.balancer.stop()
    assert caught is not None, "the victim never had a commit open in the catalog"
    return caught


def test_three_collectors_store_every_acknowledged_batch_once_through_reconnects_and_a_kill(
        postgres: Postgres, tmp_path: Path) -> None:
    fleet = Fleet(postgres, tmp_path, collectors=3, sims=4)
    try:
        caught = asyncio.run(_run(fleet))
        survivors = [c for c in fleet.collectors if c.proc.poll() is None]
        urls = [c.ready.group("http") for c in survivors]
        # the same flame graph from every collector, for the whole run
        graphs = {_get(f"{url}/api/v1/flamegraph?service=sim-0&from=now-1h&to=now%2B1m"
                       "&format=folded") for url in urls}
        metrics = [_after_a_pass(url) for url in urls]
        for child in survivors:
            assert child.stop() == 0, child.output()[-3000:]
    finally:
        fleet.stop_all()

    assert len(graphs) == 1, graphs
    (graph,) = graphs
    store = LakeStore(fleet.catalog, fleet.data_path)
    try:
        def one(sql: str, **params: object) -> object:
            return store._read(lambda cur: (cur.execute(sql, params).fetchone() or (None,))[0])

        # no batch stored twice, none lost: each sim's stored samples per seq are exactly
        # what it submitted, and it has nothing left to send
        assert one("SELECT count(*) FROM (SELECT agent_id, seq, stack_no, thread "
                   "FROM samples GROUP BY ALL HAVING count(*) > 1)") == 0
        for s in fleet.sims:
            stored = dict(store._read(lambda cur, name=s.name: cur.execute(
                "SELECT seq, sum(count) FROM samples WHERE service = $s GROUP BY seq",
                {"s": name}).fetchall()))
            assert stored == s.submitted, s.name
            assert s.shipper.stats.dropped == 0 and s.shipper.pending == 0
        batches = one("SELECT count(*) FROM (SELECT DISTINCT agent_id, seq FROM samples)")
    finally:
        store.close()
    # each batch acknowledged once: as stored, or as the duplicate of a copy committed
    # by a collector whose acknowledgement was lost with its connection
    assert fleet.acked() == batches
    assert sum(int(n) for n in re.findall(r" (\d+)$", graph, re.M)) == sum(
        s.submitted[seq] for s in fleet.sims[:1] for seq in s.submitted)
    fatal: set[str] = set()
    for page in metrics:
        runs = _metric(page, "pyrometer_lake_maintenance_runs_total")
        assert runs.get('{result="ok"}', 0) + runs.get('{result="skipped"}', 0) >= 1, runs
        assert runs.get('{result="failed"}', 0) == 0, runs
        failures = _metric(page, "pyrometer_lake_maintenance_step_failures_total")
        # conflicts are retried by the next pass, and a fatal merge (a DuckLake 1.5.5 bug,
        # maintenance.py) costs that step alone; nothing else may fail
        assert not any('kind="error"' in labels for labels in failures), failures
        fatal.update(labels for labels in failures if 'kind="fatal"' in labels)
    print(f"\nlake fleet: {len(fleet.collectors)} collectors, {len(fleet.sims)} agents, "
          f"{fleet.balancer.connections} connections ({fleet.balancer.routed}), "
          f"{batches} batches stored, {fleet.acked()} acknowledged; killed during: {caught}; "
          f"fatal maintenance steps: {sorted(fatal) or 'none'}")
    assert all(n > 0 for n in fleet.balancer.routed.values()), fleet.balancer.routed
