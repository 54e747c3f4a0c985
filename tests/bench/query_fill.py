"""A day of one service, written straight into the collector's tables.

The tables are created by the collector's own store (so the schema is exactly what it
serves from); the rows come from INSERT ... SELECT over range(), one statement per
table, with pseudo-random values from DuckDB's hash() so that a run is reproducible.
Samples and telemetry go into the tables on disk (`<table>_rows`, each row's source by number),
with readings at full double precision; the columns that schema.py keeps at fixed
decimal places round them as they go in, as they do for the collector's own appends.
Times and spans are written in the whole units those tables hold (milliseconds and
microseconds, schema.RESOLUTION).
Rows go in the order real ingest appends them: a window at a time, and in it each
instance's batch whole, as agents' batches arrive side by side. A batch holds one
instance's profile rows for the window and its telemetry for the window's 10 seconds in
time order (1 Hz readings, requests, engine scrapes), so a telemetry table holds runs of
one source's rows. (Until this order, the telemetry went second by second across all
instances, which no collector writes: each row's source differed from the last, and the
process, host, GPU, engine and request tables took 72 MiB more of the full day's file,
695 MiB against 623 MiB, the same rows copied in each order.) Per-instance values (names,
ids) come from list parameters, not joins, so nothing reorders the rows. Then the store's
own compaction writes the profile rollups, as a running collector's would have by the
time the day is queried.

What the day holds (see `Day`): every instance sends a 10 s profile window of 50-150
(stack, thread) rows whose counts follow 1/rank and add up to about 1000 (100 Hz), two
threads, a version label that a rolling deploy changes three hours before the end (with
one deploy event per instance and a new pid), per-request records, and 1 Hz GPU, process
and host readings. Near the end, 40% of the instances' GPUs throttle (thermal slowdown,
SM clock down) for two minutes: their requests take three times as long and their
hottest stack waits on the GPU. That is the spike /api/v1/spikes should find.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from bench.query_stacks import StackPool, stack_pool
from pyrometer.collector.ingest.decode import frame_id
from pyrometer.collector.storage.compaction import CompactionPolicy
from pyrometer.collector.storage.duckdb.backend import DuckDBStore

SECOND = 1_000_000_000
SERVICE = "inference"
WINDOW_S = 10
ROWS_MIN, ROWS_MAX = 50, 150  # (stack, thread) rows per window
HOT = 40  # ranks that always take the same (hottest) stacks; the rest draw from the tail
OLD, NEW = "v41", "v42"
LABELS = '{"region":"us-east-1","zone":"us-east-1a"}'


@dataclass(frozen=True, slots=True)
class Day:
    """The data's shape; times are offsets in seconds back from the end."""

    instances: int
    seconds: int
    request_rate: int  # per instance per second
    stacks: int  # distinct stacks of the service
    end_ns: int  # a multiple of the window length
    deploy_ago_s: int  # the rollout starts here; one instance every deploy_stagger_s
    deploy_stagger_s: int
    spike_ago_s: int
    spike_s: int

    def __post_init__(self) -> None:
        if self.seconds % WINDOW_S or self.end_ns % (WINDOW_S * SECOND):
            raise ValueError(f"a day is whole {WINDOW_S} s windows: {self.seconds} s ending at "
                             f"{self.end_ns}")

    @property
    def start_ns(self) -> int:
        return self.end_ns - self.seconds * SECOND

    @property
    def windows(self) -> int:
        return self.seconds // WINDOW_S

    def params(self, pool: StackPool) -> dict[str, Any]:
        """What the fill statements refer to (each gets the names it uses, see `_used`)."""
        n = self.instances
        return {
            "t0": self.start_ns, "window": WINDOW_S * SECOND, "n": n, "service": SERVICE,
            "instances": [f"{SERVICE}-{i:03d}" for i in range(n)],
            "hosts": [f"gpu-node-{i:03d}" for i in range(n)],
            "agents": [f"{(i * 2654435761) % 2**64:016x}{i:016x}" for i in range(n)],
            "deploy": self.end_ns - self.deploy_ago_s * SECOND, "stagger": self.deploy_stagger_s * SECOND,
            "spike0": self.end_ns - self.spike_ago_s * SECOND,
            "spike1": self.end_ns - (self.spike_ago_s - self.spike_s) * SECOND,
            "old": OLD, "new": NEW, "labels": LABELS,
            "spike_idx": pool.spike_index, "tail": len(pool.stack_ids) - HOT - 1,
            "kmin": ROWS_MIN, "kspan": ROWS_MAX - ROWS_MIN + 1, "hot": HOT,
            "rate": self.request_rate, "seconds": self.seconds, "window_s": WINDOW_S,
        }


# Shared expressions. An instance is "hit" by the spike when i % 5 < 2 (40%); its version
# and pid change at deploy + i * stagger.
_VERSION = "CASE WHEN ts >= $deploy + i * $stagger THEN $new ELSE $old END"
_PID = "(CASE WHEN ts >= $deploy + i * $stagger THEN 2000 ELSE 1000 END + i)::INTEGER"
_HIT = "(i % 5 < 2 AND ts >= $spike0 AND ts < $spike1)"
_IDENTITY = "$service, $instances[i + 1], $hosts[i + 1], $agents[i + 1]"
# telemetry rows name their source by number (schema.py): instance i's sources are
# 2i + 1 before its deploy and 2i + 2 after, as SOURCES numbers them
_SOURCE = "(1 + 2 * i + (ts >= $deploy + i * $stagger)::INTEGER)::INTEGER"


def _unit(*keys: str) -> str:
    """A reproducible uniform number in [0, 1) from hash() of the keys."""
    return f"(hash({', '.join(keys)}) % 1000003) / 1000003.0"


SAMPLES = f"""
INSERT INTO samples_rows
SELECT ts, {_SOURCE}, ts + $window, w + 1, pid,
       CASE WHEN r % 5 = 4 THEN 'ThreadPoolExecutor-0_0' ELSE 'MainThread' END,
       (1 + CASE WHEN hit AND r = 0 THEN $spike_idx WHEN r < $hot THEN r
             ELSE $hot + (tail_at + r * 7919) % $tail END)::INTEGER,
       greatest(1, round(scale / (r + 1) * (0.75 + 0.5 * {_unit('w', 'i', 'r')})))::BIGINT,
       100.0, false
FROM (SELECT *, unnest(range(k)) AS r
      FROM (SELECT *, {_PID} AS pid, {_HIT} AS hit,
                   (hash(w, i) % $tail)::BIGINT AS tail_at, 1000.0 / (ln(k) + 0.5772) AS scale
            FROM (SELECT *, $t0 + w * $window AS ts, $kmin + (hash(i, w) % $kspan)::BIGINT AS k
                  FROM (SELECT g // $n AS w, g % $n AS i FROM range($windows * $n) t(g)))))
"""
# requests end at random moments of their second, and a batch holds them in the order they
# ended; tokens drive the latency, with a tail
REQUESTS = f"""
INSERT INTO requests_rows
SELECT ts // 1000000, {_SOURCE}, s // 10 + 1, {_PID},
       CASE WHEN hash(s, i, j, 4) % 10 = 0 THEN '/v1/embed' ELSE '/v1/predict' END, 'POST',
       CASE WHEN hash(s, i, j, 3) % 1000 = 0 THEN 503 ELSE 200 END,
       ((12 + 0.04 * tokens + 25 * pow({_unit('s', 'i', 'j', '2')}, 6))
        * CASE WHEN {_HIT} THEN 3 ELSE 1 END * 1000)::BIGINT,
       tokens * 4 + 300, 600 + tokens, NULL, NULL, NULL, []::BIGINT[], 0, tokens, 'middleware', NULL
FROM (SELECT *, $t0 + s * 1000000000 + (hash(s, i, j) % 1000000000)::BIGINT AS ts,
             64 + (hash(s, i, j, 1) % 960)::BIGINT AS tokens
      FROM (SELECT g // ($n * per_window) * $window_s + g // $rate % $window_s AS s,
                   g // per_window % $n AS i, g % $rate AS j
            FROM (SELECT g, $rate * $window_s AS per_window FROM range($seconds * $n * $rate) t(g))))
ORDER BY s // $window_s, i, ts
"""
# a batch's 1 Hz readings: window by window, each instance's 10 s together
_SECONDS = """FROM (SELECT *, $t0 + s * 1000000000 + i * 7000000 AS ts
      FROM (SELECT g // ($n * $window_s) * $window_s + g % $window_s AS s, g // $window_s % $n AS i
            FROM range($seconds * $n) t(g)))"""
GPU = f"""
INSERT INTO gpu_rows
SELECT ts // 1000000, {_SOURCE}, s // 10 + 1, 0, 'GPU-' || $agents[i + 1], 'NVIDIA A10G', false,
       CASE WHEN {_HIT} THEN 89.0 ELSE 62.0 + 6 * {_unit('s', 'i')} END, 90.0, NULL,
       CASE WHEN {_HIT} THEN 1095 ELSE 1710 END, 1710, CASE WHEN {_HIT} THEN 1095 ELSE 1710 END,
       6251, 6251, CASE WHEN {_HIT} THEN 64 ELSE 0 END,
       (150000 + 60000 * {_unit('s', 'i', '1')})::BIGINT, 300000, 18000000000, 24000000000,
       (60 + 30 * {_unit('s', 'i', '2')})::INTEGER, 35, 0, 17200000000
{_SECONDS}
"""
PROCESS = f"""
INSERT INTO process_rows
SELECT ts // 1000000, {_SOURCE}, s // 10 + 1, {_PID}, 1.0,
       0.7 + 0.3 * {_unit('s', 'i')}, 0.08 + 0.04 * {_unit('s', 'i', '1')},
       3000000000 + (hash(i) % 100)::BIGINT * 1000000, 24, (400 + hash(s, i, 2) % 200)::BIGINT,
       (10 + hash(s, i, 3) % 20)::BIGINT, 0.05 + 0.05 * {_unit('s', 'i', '4')}
{_SECONDS}
"""
HOST = f"""
INSERT INTO host_rows
SELECT ts // 1000000, {_SOURCE}, s // 10 + 1, 30 + 20 * {_unit('s', 'i')}, 8,
       (20000000000 - 100000000 * {_unit('s', 'i', '1')})::BIGINT, 32000000000,
       2 + {_unit('s', 'i', '2')}, 1.5 * {_unit('s', 'i', '3')}, 0.0, 0.0, 0.2, 0.1
{_SECONDS}
"""
# the agent's own footprint, once a minute per agent
AGENT_STATS = f"""
INSERT INTO agent_stats_rows
SELECT ts // 1000000, {_SOURCE}, s // 10 + 1, 0.02 + 0.01 * {_unit('s', 'i')}, 90000000,
       0, 0, 0, 0, 0, 0, 0
FROM (SELECT *, $t0 + s * 1000000000 + i * 7000000 AS ts
      FROM (SELECT g // $n * 60 AS s, g % $n AS i FROM range($seconds // 60 * $n) t(g)))
"""
EVENTS = f"""
INSERT INTO events
SELECT ts, {_IDENTITY}, $new, (ts - $t0) // $window + 1, 'deploy', $old, 2000 + i, 1000 + i, '{{}}'
FROM (SELECT i, $deploy + i * $stagger AS ts FROM range($n) t(i))
"""
# the serving engine's series (agent --scrape), four of them per instance every 5 s
ENGINE = f"""
INSERT INTO engine_rows
SELECT ts // 1000000, {_SOURCE}, s // 10 + 1, m,
       CASE WHEN m = 'kv_cache_usage' THEN 0.4 + 0.5 * {_unit('s', 'i')}
            ELSE 100 * {_unit('s', 'i', 'm')} END,
       5.0, CASE WHEN m = 'queue_time_s' THEN 100 ELSE 0 END, 'vllm', 'llama'
FROM (SELECT *, unnest(['queue_time_s', 'requests_waiting', 'kv_cache_usage', 'prompt_tokens']) AS m
      FROM (SELECT *, $t0 + s * 1000000000 + i * 7000000 AS ts
            FROM (SELECT g // ($n * scrapes) * $window_s + g % scrapes * 5 AS s,
                         g // scrapes % $n AS i
                  FROM (SELECT g, $window_s // 5 AS scrapes FROM range($seconds // 5 * $n) t(g)))))
"""
SOURCES = f"""
INSERT INTO sources
SELECT 1 + 2 * i + j, {_IDENTITY}, CASE WHEN j = 0 THEN $old ELSE $new END, $labels
FROM range($n) t(i), range(2) u(j)
"""
HWM = "INSERT INTO agent_hwm SELECT $agents[i + 1], $windows FROM range($n) t(i)"
TABLE_SQL = {"sources": SOURCES, "samples": SAMPLES, "requests": REQUESTS, "gpu": GPU, "process": PROCESS,
             "host": HOST, "agent_stats": AGENT_STATS, "events": EVENTS, "engine": ENGINE,
             "agent_hwm": HWM}


def _used(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters `sql` names: DuckDB refuses named parameters a statement lacks."""
    return {name: value for name, value in params.items() if re.search(rf"\${name}\b", sql)}


def _dictionaries(con: duckdb.DuckDBPyConnection, pool: StackPool) -> None:
    """stacks and frames, each id once, as one collector writes them."""
    frames = pool.frames()
    con.register("_frames", pa.table({
        "frame_id": list(frames), "name": [f.name for f in frames.values()],
        "file": [f.file for f in frames.values()],
        "line": pa.array([f.line for f in frames.values()], pa.int32())}))
    con.register("_stacks", pa.table({  # numbered 1, 2, ... in the pool's order
        "stack_id": list(pool.stack_ids),
        "frame_ids": [[frame_id(f) for f in stack] for stack in pool.stacks],
        "stack_no": pa.array(range(1, len(pool.stack_ids) + 1), pa.int32())}))
    con.execute("INSERT INTO frames SELECT * FROM _frames")
    con.execute("INSERT INTO stacks SELECT * FROM _stacks")


def fill(path: Path, day: Day) -> dict[str, float]:
    """Create the collector's tables in `path` and fill them; seconds per table."""
    DuckDBStore(path).close()  # the schema, exactly as the collector creates it
    pool = stack_pool(day.stacks)
    params = day.params(pool) | {"windows": day.windows}
    took: dict[str, float] = {}
    with duckdb.connect(str(path)) as con:
        began = time.perf_counter()
        _dictionaries(con, pool)
        took["stacks, frames"] = time.perf_counter() - began
        for table, sql in TABLE_SQL.items():
            began = time.perf_counter()
            con.execute(sql, _used(sql, params))
            took[table] = time.perf_counter() - began
    # what a running collector's background compaction has done by then: every minute
    # that ended more than its grace ago is in the rollups
    began = time.perf_counter()
    store = DuckDBStore(path)
    try:
        policy = CompactionPolicy()
        while not store.compact(time.time_ns() - policy.grace_ns, max_span_ns=6 * 3600 * SECOND
                                ).caught_up:
            pass
    finally:
        store.close()
    took["rollups"] = time.perf_counter() - began
    with duckdb.connect(str(path)) as con:
        began = time.perf_counter()
        con.execute("CHECKPOINT")
        took["checkpoint"] = time.perf_counter() - began
    return took
