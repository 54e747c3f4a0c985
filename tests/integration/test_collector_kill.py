"""An ack means committed: a collector killed with SIGKILL under load, and restarted on
the same ports, ends with every batch the agents produced stored exactly once.

Real agents (`pyrometer agent` profiling real target processes, 2 s windows, a spool
each) and simulated ones (in-process Shippers submitting windows of known counts)
stream to a real collector process. It is killed and restarted during the run (or
kept down for a while); at the end the agents are stopped (SIGTERM: they ship their
last window and their spool), and the database is checked with SQL: the simulated
agents' samples equal what they submitted, every real agent's samples equal the sum
of the windows it logged, and no (agent, seq) batch is stored twice.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import duckdb
import pytest

from pyrometer.agent.shared.model import NANOS_PER_SECOND
from pyrometer.collector.procs import Child, python_env, start
from support import targets
from support.sim_agents import sim as sim_agent
from support.sim_agents import until

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
WINDOW_LOG = re.compile(r"INFO pyrometer.agent: window [\d.]+ s: (\d+) samples")
SHIPPED_LOG = re.compile(r"shipped (\d+) batches \((\d+) acked, (\d+) duplicates, (\d+) dropped, "
                         r"(\d+) spooled, (\d+) left\)")
S = NANOS_PER_SECOND


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """The collector (restartable on fixed ports), real agents and simulated ones."""

    def __init__(self, tmp: Path, real: int, sims: int) -> None:
        self.tmp, self.db = tmp, tmp / "kill.duckdb"
        self.grpc, self.http = free_port(), free_port()
        self.collectors: list[Child] = []
        self.children: list[Child] = []
        (tmp / "target.py").write_text(targets.BUSY)
        self.targets = [self._add(start(f"target-{i}", [sys.executable, str(tmp / "target.py")],
                                        "target ready", tmp)) for i in range(real)]
        self.sims = [sim_agent(f"sim-{i}", f"127.0.0.1:{self.grpc}", tmp / f"sim-spool-{i}")
                     for i in range(sims)]
        self.agents: list[Child] = []

    def _add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def start_collector(self) -> Child:
        argv = CLI + ["collector", "--db", str(self.db), "--grpc-listen", f"127.0.0.1:{self.grpc}",
                      "--http-listen", f"127.0.0.1:{self.http}"]
        child = self._add(start(f"collector-{len(self.collectors)}", argv, "ingest on", self.tmp,
                                env=python_env()))
        self.collectors.append(child)
        return child

    def start_agents(self) -> None:
        for i, target in enumerate(self.targets):
            argv = CLI + ["agent", "--collector", f"127.0.0.1:{self.grpc}", "--service",
                          f"real-{i}", "--pid", str(target.pid), "--window", "2", "--gpu", "off",
                          "--requests-listen", "off", "--spool-dir", str(self.tmp / f"spool-{i}")]
            self.agents.append(self._add(start(f"agent-{i}", argv, "profiling pid", self.tmp,
                                               env=python_env())))

    def duplicates_metric(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=10) as r:
            text = r.read().decode()
        match = re.search(r"^pyrometer_ingest_duplicate_batches_total (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    def acked(self) -> int:
        return sum(sim.shipper.stats.acked for sim in self.sims)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop(signal.SIGKILL)


def windows_logged(agent: Child) -> list[int]:
    return [int(n) for n in WINDOW_LOG.findall(agent.output())]


async def scenario(c: Cluster, outages: list[float], period_s: float) -> dict[str, int]:
    """Run the load, kill the collector once per outage (down that long), stop everything."""
    stop = asyncio.Event()
    c.start_collector()
    await asyncio.to_thread(c.start_agents)
    shipping = [asyncio.create_task(sim.shipper.run()) for sim in c.sims]
    producing = [asyncio.create_task(sim.produce(stop, period_s)) for sim in c.sims]
    duplicates_seen = 0
    for down_s in outages:
        acked = c.acked()
        # under load: real agents have shipped a window, the sims keep getting acks
        await until(lambda acked=acked: c.acked() >= acked + 20 * len(c.sims)
                    and all(windows_logged(a) for a in c.agents))
        duplicates_seen += int(c.duplicates_metric())  # before the kill: a lower bound
        c.collectors[-1].stop(signal.SIGKILL)
        await asyncio.sleep(down_s)  # the outage itself, not a wait for something
        await asyncio.to_thread(c.start_collector)
    acked = c.acked()
    await until(lambda: c.acked() >= acked + 20 * len(c.sims)
                and all(len(windows_logged(a)) >= 2 for a in c.agents))
    stop.set()
    await asyncio.gather(*producing)
    for sim in c.sims:
        await sim.shipper.close()
    await asyncio.wait_for(asyncio.gather(*shipping), 120)
    for agent in c.agents:
        code = await asyncio.to_thread(agent.stop, signal.SIGTERM, 60)
        assert code == 0, agent.output()[-3000:]
    duplicates_seen += int(c.duplicates_metric())
    assert c.collectors[-1].stop(signal.SIGTERM) == 0, c.collectors[-1].output()[-3000:]
    return {"collector_duplicates": duplicates_seen}


def check_and_report(c: Cluster, extra: dict[str, int]) -> None:
    with duckdb.connect(str(c.db), read_only=True) as con:
        def one(sql: str, **params: object) -> object:
            return (con.execute(sql, params).fetchone() or (None,))[0]

        # no batch stored twice: each (agent, seq, stack, thread, pid) row is unique
        assert one("SELECT count(*) FROM (SELECT agent_id, seq, stack_no, thread, pid "
                   "FROM samples GROUP BY ALL HAVING count(*) > 1)") == 0
        batches_stored = one("SELECT count(*) FROM (SELECT DISTINCT agent_id, seq FROM samples "
                             "UNION SELECT DISTINCT agent_id, seq FROM process "
                             "UNION SELECT DISTINCT agent_id, seq FROM host "
                             "UNION SELECT DISTINCT agent_id, seq FROM agent_stats "
                             "UNION SELECT DISTINCT agent_id, seq FROM events "
                             "UNION SELECT DISTINCT agent_id, seq FROM requests "
                             "UNION SELECT DISTINCT agent_id, seq FROM gpu)")
        for sim in c.sims:
            stored = dict(con.execute("SELECT seq, sum(count) FROM samples WHERE service = $s "
                                      "GROUP BY seq", {"s": sim.name}).fetchall())
            assert stored == sim.submitted, sim.name
            assert sim.shipper.stats.dropped == 0 and sim.shipper.pending == 0
        for i, agent in enumerate(c.agents):
            logged = windows_logged(agent)
            stored_samples = one("SELECT coalesce(sum(count), 0) FROM samples WHERE service = $s",
                                 s=f"real-{i}")
            assert stored_samples == sum(logged), (i, len(logged))
    sent = acked = duplicates = produced = 0
    for sim in c.sims:
        s = sim.shipper.stats
        produced, sent = produced + len(sim.submitted), sent + s.sent
        acked, duplicates = acked + s.acked, duplicates + s.duplicates
    for agent in c.agents:
        found = SHIPPED_LOG.findall(agent.output())
        assert found, agent.output()[-2000:]
        a_sent, a_acked, a_dup, a_dropped, _, a_left = map(int, found[-1])
        assert a_dropped == 0 and a_left == 0, found[-1]
        sent, acked, duplicates = sent + a_sent, acked + a_acked, duplicates + a_dup
    # the agents' shipped count is per sent batch (resends included), as are the sims'
    print(f"\nkill test: {len(c.collectors) - 1} collector kills, {len(c.agents)} real and "
          f"{len(c.sims)} simulated agents; sim batches produced {produced}; sent {sent} "
          f"(resends included), acknowledged {acked}, stored {batches_stored} distinct "
          f"batches, duplicates dropped {duplicates} (acked as duplicate; collector metric "
          f"saw at least {extra['collector_duplicates']})")
    # each batch is acknowledged once: as stored, or, when the kill took its first ack
    # with it, as a duplicate of the copy already committed; so acks equal stored batches
    assert acked == batches_stored


@pytest.mark.parametrize(("real", "sims", "outages"), [
    pytest.param(2, 3, [0.5, 0.5], id="quick"),
    pytest.param(3, 6, [2.0, 5.0], id="long", marks=pytest.mark.slow),
])
def test_sigkill_twice_under_load_stores_every_batch_exactly_once(
    tmp_path: Path, real: int, sims: int, outages: list[float],
) -> None:
    cluster = Cluster(tmp_path, real, sims)
    try:
        extra = asyncio.run(scenario(cluster, outages, period_s=0.02))
        check_and_report(cluster, extra)
    finally:
        cluster.stop_all()


@pytest.mark.parametrize("down_s", [pytest.param(5.0, id="5s"),
                                    pytest.param(60.0, id="60s", marks=pytest.mark.slow)])
def test_a_collector_down_for_a_while_loses_nothing(tmp_path: Path, down_s: float) -> None:
    cluster = Cluster(tmp_path, real=1, sims=2)
    try:
        extra = asyncio.run(scenario(cluster, [down_s], period_s=0.05))
        check_and_report(cluster, extra)
    finally:
        cluster.stop_all()


def test_a_second_collector_on_the_same_file_says_so_in_one_line(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, real=0, sims=0)
    try:
        holder = cluster.start_collector()
        argv = CLI + ["collector", "--db", str(cluster.db), "--grpc-listen", "127.0.0.1:0",
                      "--http-listen", "127.0.0.1:0"]
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                env=python_env(), check=False)
        assert second.returncode == 2
        assert "Traceback" not in second.stderr
        assert (f"pyrometer collector: error: database file {cluster.db} is in use by another "
                f"process (pid {holder.pid})") in second.stderr
    finally:
        cluster.stop_all()


def test_a_second_collector_on_a_taken_grpc_port_refuses_in_one_line(tmp_path: Path) -> None:
    # gRPC's default SO_REUSEPORT would let both listen and the kernel split agents
    # between two databases; the second collector must refuse and exit as a user error
    cluster = Cluster(tmp_path, real=0, sims=0)
    try:
        cluster.start_collector()
        argv = CLI + ["collector", "--db", str(tmp_path / "other.duckdb"), "--grpc-listen",
                      f"127.0.0.1:{cluster.grpc}", "--http-listen", "127.0.0.1:0"]
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                env=python_env(), check=False)
        assert second.returncode == 2, second.stderr
        assert "Traceback" not in second.stderr
        errors = [line for line in second.stderr.splitlines() if "error:" in line]
        assert errors == [f"pyrometer collector: error: cannot listen on 127.0.0.1:{cluster.grpc} "
                          "(gRPC ingest): Address already in use"], second.stderr
    finally:
        cluster.stop_all()
