"""The BENCHMARKS.md section of the collector ingest benchmark (figures from ingest_load)."""

from __future__ import annotations

from typing import Any

from bench import common
from bench.ingest_workload import DRAIN_IN_FLIGHT, REQUEST_RATE, WINDOW_S
from pyrometer.collector.config import DEFAULT_COMMIT_DELAY_MS

TARGET_SAMPLES_PER_S = 1_500_000.0  # 15,000 agents at 100 Hz (goals.py)
TARGET_ACK_P99_MS = 250.0
COMMAND = ".venv/bin/python tests/bench/ingest_load.py --size full"


def _level_label(level: dict[str, Any]) -> str:
    spec = level["level"]
    workers = common.decode_workers(level)
    with_workers = (f", {workers} decode worker{'s' if workers > 1 else ''}" if workers else "")
    if spec["mode"] == "closed" and spec["streams"] == 1:
        return f"1 agent draining its spool ({spec['in_flight']} in flight){with_workers}"
    if spec["mode"] == "closed":
        return (f"{spec['streams']:,} agents, saturating ({spec['in_flight']} in flight each)"
                f"{with_workers}")
    return f"{spec['streams']:,} agents, one batch / {spec['period_s']:g} s each{with_workers}"


def _rate(level: dict[str, Any]) -> int:
    return int(level["level"].get("request_rate", REQUEST_RATE))


def _fleets(levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paced levels of a fleet alone (without an agent draining its spool beside it),
    decoded in the collector's own process (the workers' levels have their own table)."""
    return [lv for lv in levels if lv["level"]["mode"] == "paced" and not lv["level"].get("drainer")
            and not common.decode_workers(lv)]


def _requests(levels: list[dict[str, Any]]) -> list[str]:
    """One paced fleet at the standard request rate and at a busy server's: the
    collector's CPU per request record is the difference of the two."""
    paced = [lv for lv in _fleets(levels) if common.default_commit_wait(lv)]
    lines: list[str] = []
    for busy in (lv for lv in paced if _rate(lv) != REQUEST_RATE):
        base = next((lv for lv in paced if _rate(lv) == REQUEST_RATE
                     and lv["level"]["streams"] == busy["level"]["streams"]), None)
        if base is None:
            continue
        rows = [base, busy]
        extra = busy["requests_per_s"] - base["requests_per_s"]
        cost = ((busy["observed"]["collector_cores"] - base["observed"]["collector_cores"])
                / extra * 1e6 if extra > 0 else float("nan"))
        lines += [
            f"Request records: the same {busy['level']['streams']:,} paced agents at "
            f"{REQUEST_RATE} and at {_rate(busy)} requests a second each (a busy model "
            "server's middleware or proxy; every record is stored, with its latency, sizes, "
            "route and trace id). The collector's CPU per request record is the difference "
            "of the two rows' CPU over the difference of their requests.", "",
            "| load | requests/s | samples/s | collector CPU, cores "
            "| collector CPU s / 1M samples | ack p99 ms | stored = acked |",
            "|---|---:|---:|---:|---:|---:|---|",
            *(f"| {_level_label(lv)}, {_rate(lv)} requests/s each | {lv['requests_per_s']:,.0f} "
              f"| {lv['samples_per_s']:,.0f} | {lv['observed']['collector_cores']:.2f} "
              f"| {lv['collector_cpu_s_per_million']:.1f} | {lv['ack_ms']['p99']:,.1f} "
              f"| {'yes' if lv['lossless'] else '**no**'} |" for lv in rows), "",
            f"CPU per request record: **{cost:.1f} µs**. Until commit a4b4be3 the collector "
            "validated and built a frozen record per request: these two levels, two runs "
            "each on one machine, measured 9.0 and 9.3 µs a record with the code before it "
            "and 5.9 and 6.1 µs with it.", ""]
    return lines


def _judged(levels: list[dict[str, Any]], *, workers: bool = False) -> list[dict[str, Any]]:
    """The levels run with the collector's own commit wait and the standard batches (the
    rest vary one of them), without decode workers unless `workers`."""
    return [lv for lv in levels if common.judged_level(lv, workers=workers)]


def _workers(levels: list[dict[str, Any]]) -> list[str]:
    """The same fleets with and without decode workers: what the option trades."""
    with_workers = [lv for lv in _judged(levels, workers=True) if common.decode_workers(lv)]
    rows = []
    for lv in with_workers:
        spec = lv["level"]
        rows += [base for base in _judged(levels) if base["level"]["mode"] == spec["mode"]
                 and base["level"]["streams"] == spec["streams"]] + [lv]
    if not with_workers:
        return []
    return [
        "Decode workers (`--decode-workers N`, ingest/workers.py): the same fleets with batches "
        "decoded and validated in a worker process beside the collector, which keeps gRPC, "
        "group commit and DuckDB. The collector's CPU includes its workers'.", "",
        "| load | samples/s | ack p99 ms | collector CPU, cores | collector CPU s / 1M samples "
        "| generators CPU, cores | stored = acked |", "|---|---:|---:|---:|---:|---:|---|",
        *(f"| {_level_label(lv)} | {lv['samples_per_s']:,.0f} | {lv['ack_ms']['p99']:,.1f} "
          f"| {lv['observed']['collector_cores']:.2f} | {lv['collector_cpu_s_per_million']:.1f} "
          f"| {lv['observed']['generator_cores']:.2f} | {'yes' if lv['lossless'] else '**no**'} |"
          for lv in rows), "",
        "A worker takes the decoding off the collector's GIL and pays for it in CPU: its "
        "answer's dump and load, both sides' system calls, and a process woken for every "
        "batch. Saturated, that lets the collector use more than one core; at its agents' own "
        "pace it only costs, which is why the default is none (ingest/workers.py has the runs "
        "behind that choice). With a worker the bound moves to the group commits, which run "
        "one at a time (ingest/commit.py): the commit worker builds the Arrow tables and makes "
        "the DuckDB calls, and in runs at 1,000 saturating agents on this machine it was busy "
        "all the time (the collector's commit-time histogram, pyrometer_commit_seconds).", ""]


def _wait(level: dict[str, Any]) -> float:
    delay = level["level"].get("commit_delay_ms")
    return DEFAULT_COMMIT_DELAY_MS if delay is None else float(delay)


def _waits(levels: list[dict[str, Any]]) -> list[str]:
    """The paced fleet at several commit waits: what the default trades (the standard
    batches only: a busy-request level of the same fleet has its own table)."""
    paced = [lv for lv in _fleets(levels) if _rate(lv) == REQUEST_RATE]
    if len({_wait(lv) for lv in paced}) < 2:
        return []
    fleet = max(lv["level"]["streams"] for lv in paced)
    rows = sorted((lv for lv in paced if lv["level"]["streams"] == fleet), key=_wait)
    lines = [f"The same paced fleet ({fleet:,} agents) with the collector's wait for company "
             "set by `--commit-delay-ms` (ingest/commit.py): a longer wait puts more batches in "
             "each commit, so its fixed cost is paid less often, and acks come later.", "",
             "| commit wait | collector CPU s / 1M samples | ack p50 ms | ack p99 ms | stored = acked |",
             "|---|---:|---:|---:|---|"]
    for lv in rows:
        default = " (default)" if common.default_commit_wait(lv) else ""
        lines.append(f"| {_wait(lv):g} ms{default} | {lv['collector_cpu_s_per_million']:.1f} "
                     f"| {lv['ack_ms']['p50']:,.1f} | {lv['ack_ms']['p99']:,.1f} "
                     f"| {'yes' if lv['lossless'] else '**no**'} |")
    return lines


def _table(levels: list[dict[str, Any]]) -> list[str]:
    lines = ["| load | batches/s | samples/s | ack p50 ms | ack p99 ms | collector CPU, cores "
             "| collector CPU s / 1M samples | generators CPU, cores | other CPU, cores "
             "| collector peak RSS MiB | stored = acked |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for lv in levels:
        seen = lv["observed"]
        stored = "yes" if lv["lossless"] else f"**no** ({_shortfall(lv)})"
        lines.append(
            f"| {_level_label(lv)} | {lv['batches_per_s']:,.0f} | {lv['samples_per_s']:,.0f} "
            f"| {lv['ack_ms']['p50']:,.1f} | {lv['ack_ms']['p99']:,.1f} "
            f"| {seen['collector_cores']:.2f} | {lv['collector_cpu_s_per_million']:.1f} "
            f"| {seen['generator_cores']:.2f} | {seen['other_cores']:.2f} "
            f"| {lv['peak_rss_mib']:.0f} | {stored} |")
    return lines


def _drain(levels: list[dict[str, Any]]) -> list[str]:
    """How fast one agent's backlog moves: alone, and beside a paced fleet."""
    lone = [lv for lv in _judged(levels) if lv["level"]["mode"] == "closed"
            and lv["level"]["streams"] == 1]
    beside = [lv for lv in levels if lv.get("drain")]
    if not lone and not beside:
        return []
    lines = ["An agent draining its spool after an outage sends its backlog with up to "
             f"{DRAIN_IN_FLIGHT} batches in flight (its shipper's window). The collector "
             "reads a stream ahead of its acks (ingest/server.py), so the batches behind one "
             "being committed are decoded meanwhile and share the next commit. Through commit "
             "19f6cc6 a stream was read a batch per ack, one commit per batch whatever the "
             "window; one run each way on one machine, 30 s beside 1,000 paced agents and 20 "
             "s alone, measured 8.9 and 92 batches a second before, 69 and 293 after (an hour "
             "of one agent's 10 s windows, 360 batches, beside the fleet in 5 s rather than "
             "40).", "",
             "| load | the draining agent's batches/s | its ack p50 ms | the fleet's ack p99 ms "
             "| stored = acked |", "|---|---:|---:|---:|---|"]
    for lv in lone:
        lines.append(f"| {_level_label(lv)} | {lv['batches_per_s']:,.0f} "
                     f"| {lv['ack_ms']['p50']:,.1f} | | {'yes' if lv['lossless'] else '**no**'} |")
    for lv in beside:
        lines.append(f"| 1 agent draining its spool ({DRAIN_IN_FLIGHT} in flight) beside "
                     f"{_level_label(lv)} | {lv['drain']['batches_per_s']:,.1f} "
                     f"| {lv['drain']['ack_p50_ms']:,.1f} | {lv['ack_ms']['p99']:,.1f} "
                     f"| {'yes' if lv['lossless'] else '**no**'} |")
    return [*lines, ""]


def _shortfall(level: dict[str, Any]) -> str:
    """What a level that lost something stored, against what was acked."""
    stored, acked = level.get("stored_records", {}), level.get("acked_records", {})
    parts = [f"samples {level['stored_samples']:,} of {level['acked_samples']:,}"]
    parts += [f"{kind} {stored.get(kind, 0):,} of {n:,}" for kind, n in acked.items()
              if stored.get(kind) != n]
    return "; ".join(parts)


def _best(levels: list[dict[str, Any]]) -> dict[str, Any]:
    closed = [lv for lv in levels if lv["level"]["mode"] == "closed"] or levels
    return max(closed, key=lambda lv: lv["samples_per_s"])


def _paced(levels: list[dict[str, Any]]) -> dict[str, Any] | None:
    paced = [lv for lv in _judged(levels) if lv["level"]["mode"] == "paced"]
    return max(paced, key=lambda lv: lv["level"]["streams"]) if paced else None


def _targets(levels: list[dict[str, Any]]) -> list[str]:
    best, paced = _best(levels), _paced(levels)
    p99 = paced["ack_ms"]["p99"] if paced else float("nan")
    lossless = all(lv["lossless"] for lv in levels)
    where = f"at {paced['level']['streams']:,} paced agents" if paced else "no paced level"
    return [
        "| target | measured | |", "|---|---|---|",
        f"| one collector ingests ≥ {TARGET_SAMPLES_PER_S:,.0f} samples/s | "
        f"{best['samples_per_s']:,.0f} samples/s "
        f"at most ({_level_label(best)}) "
        f"| {common.verdict(best['samples_per_s'], TARGET_SAMPLES_PER_S, at_most=False)} |",
        f"| ack p99 < 250 ms | {p99:,.1f} ms {where} "
        f"| {common.verdict(p99, TARGET_ACK_P99_MS, at_most=True)} |",
        f"| nothing lost (stored = acked: samples, request records, readings; every level) | "
        f"{'equal at every level' if lossless else 'a level differs (table above)'} "
        f"| {'met' if lossless else 'missed'} |",
    ]


def _thread_name(thread: dict[str, Any]) -> str:
    return thread["thread"] + (f" (×{thread['threads']})" if thread["threads"] > 1 else "")


def _profile(levels: list[dict[str, Any]]) -> list[str]:
    profiled = [lv for lv in levels if lv.get("profile")]
    if not profiled:
        return []
    lv = profiled[-1]
    prof = lv["profile"]
    if "error" in prof:
        return [f"No profile of the collector: {prof['error']}"]
    lines = [f"Where the collector's time goes at {_level_label(lv)} "
             f"({prof['samples']:,} py-spy samples of its active Python threads, taken after "
             "the measured interval under the same load).", "",
             "| collector thread (kernel CPU accounting) | cores |", "|---|---:|"]
    lines += [f"| {_thread_name(t)} | {t['cores']:.2f} |" for t in prof["threads_cpu"]]
    lines += ["", "| stage (py-spy, by the innermost frame that belongs to it) | share |", "|---|---:|"]
    lines += [f"| {name} | {share:.0%} |" for name, share in prof["stages"].items()]
    lines += ["", "| function, by self time (py-spy) | share |", "|---|---:|"]
    lines += [f"| `{name}` | {share:.1%} |" for name, share in prof["top_self"]]
    return lines


def _stage_share(levels: list[dict[str, Any]], *names: str) -> float:
    profiled = [lv["profile"] for lv in levels if lv.get("profile") and "stages" in lv["profile"]]
    return sum(profiled[-1]["stages"].get(n, 0.0) for n in names) if profiled else float("nan")


def _gil_bound(per_m: float, python_work: float) -> str:
    return (f"With a whole core to itself it would still stop at about {float(f'{1e6 / per_m:.2g}'):,.0f} "
            "samples/s, because nearly all of its work is Python under one GIL (the event loop "
            "decodes; the commit worker builds Arrow tables, and only its waits in DuckDB, with "
            "the GIL released, run beside the loop). "
            f"{TARGET_SAMPLES_PER_S:,.0f} samples/s at this cost needs "
            f"{per_m * TARGET_SAMPLES_PER_S / 1e6:.1f} cores of it; in the profile "
            f"{python_work:.0%} of the sampled Python "
            "time is per-batch Python work (decoding rows and the dictionary, validating "
            "telemetry records, building Arrow tables), not the database.")


def _bound(per_m: float, python_work: float, duckdb: float) -> str:
    if python_work != python_work:  # no profile
        return ""
    if python_work >= 0.5:
        return _gil_bound(per_m, python_work)
    return (f"Most of the sampled time ({duckdb:.0%}) is in DuckDB's insert and commit: groups "
            "are small at this level, and each pays the commit's fixed cost.")


def _analysis(levels: list[dict[str, Any]]) -> list[str]:
    """What bounds ingest here and what would move it, in this run's numbers (the
    collector's default, no decode workers: the profile is of that)."""
    levels = [lv for lv in levels if not common.decode_workers(lv)]
    best, paced = _best(levels), _paced(levels)
    closed = [lv for lv in levels if lv["level"]["mode"] == "closed"]
    per_m = best["collector_cpu_s_per_million"]
    seen = best["observed"]
    python_work = _stage_share(levels, "decode profile + dictionary", "validate telemetry records",
                               "build Arrow tables", "protobuf parse", "servicer", "metrics",
                               "group-commit bookkeeping")
    rates = ", ".join(f"{lv['samples_per_s']:,.0f}" for lv in closed)
    streams = ", ".join(f"{lv['level']['streams']:,}" for lv in closed)
    lines = [
        "**What bounds it.** "
        + (f"Saturated, {streams} streams moved {rates} samples/s: more streams put more "
           "batches in each group commit, sharing its fixed cost, until the collector's CPU is "
           "the limit. " if len(closed) > 1 else "")
        + f"At the best level the collector spends {per_m:.1f} CPU-seconds per million samples "
        f"({per_m:.1f} ms per 1,000-sample batch) and used {seen['collector_cores']:.2f} cores, while "
        f"the generators used {seen['generator_cores']:.2f} and other processes {seen['other_cores']:.2f} "
        f"({seen['machine_cores']:.2f} of the machine's cores busy in all). "
        + _bound(per_m, python_work, _stage_share(levels, "DuckDB insert + commit")),
    ]
    if paced is not None and paced["collector_cpu_s_per_million"] > 1.5 * per_m:
        ratio = paced["collector_cpu_s_per_million"] / per_m
        lines += ["", f"At {paced['level']['streams']:,} agents sending as real agents do "
                  f"({paced['samples_per_s']:,.0f} samples/s) the collector spends "
                  f"{paced['collector_cpu_s_per_million']:.1f} CPU-seconds per million samples, "
                  f"{ratio:.1f}× the saturated cost: batches arrive a few at a time, so each group "
                  "commit carries few of them (a batch waits at most "
                  f"{_wait(paced):g} ms for company: ingest/commit.py) and its fixed cost (an Arrow "
                  "append per table, the high-water marks' compare-and-set and the commit, about "
                  "9 ms of CPU in all) is paid per "
                  f"few batches. Its ack p99 ({paced['ack_ms']['p99']:,.0f} ms) is that wait, the "
                  "commit, and waiting for the CPU."]
    lines += ["", "**What would move it.** (1) Fewer statements per commit at real-agent "
              "pacing: an Arrow append per table is most of a commit's fixed cost. Leaving out the "
              "high-water marks' statement (as writing them with the rows they guard would) "
              "measured nothing at a 150 ms wait (2.23 against 2.24 CPU-s per 1M samples, one run "
              "each, batches without requests). A longer wait adds itself to the p99, on top of a "
              "tail of which DuckDB's automatic checkpoints are a part (the commit whose "
              "write-ahead log passes 16 MB also writes the tables out, 80-200 ms on this "
              "machine; ingest/commit.py). "
              "(2) Columnar per-batch "
              "work: requests (since commit a4b4be3; the request records table above) and the "
              "1 Hz readings (since 10a36ce) are read and validated a column at a time; the "
              "samples still go through per-row Python tuples on their way to Arrow columns. "
              "(3) More than one core: decode workers (above) take the decoding off the GIL; "
              "what is left on it is gRPC's loop and the commit worker, so the next step is "
              "building each batch's Arrow columns in its worker too (the stack and source "
              "numbers, the writer's, joined on in the writer), or several collectors writing "
              "DuckLake as DESIGN.md plans."]
    return lines


def markdown(result: dict[str, Any]) -> str:
    """Section 4 of BENCHMARKS.md."""
    levels = result["levels"]
    first = levels[0]
    lines = [
        "## 4. Collector ingest", "",
        f"One real collector on this {result['cpus']}-core machine, fed over real gRPC (gzip, one "
        "TCP connection and one stream per agent) by load-generator processes replaying "
        f"realistic agent batches: a 10 s window of 1,000 samples over a fixed set of 150 stacks "
        f"of depth 20-40 with Zipf-like counts, plus 30 telemetry readings (process, host, GPU "
        f"at 1 Hz) and {REQUEST_RATE * WINDOW_S} request records ({REQUEST_RATE} a second; until "
        "commit 9385307 the batches carried none); "
        f"{first['batch_bytes']['steady_batch_bytes']:,} bytes of protobuf in steady "
        f"state, the first batch of each stream {first['batch_bytes']['first_batch_bytes']:,} "
        "bytes with its dictionary. Each batch's window is the 10 s before it is sent, as a "
        "real agent's (until commit a62ece2 they ran on a timeline three days back, which "
        "made every commit after the first compaction also write rollup rows for late "
        "windows: at 1,000 paced agents 5.9 CPU-s per 1M samples where current windows cost "
        "4.3, measured side by side on one machine). The generators share the cores with the "
        "collector; their CPU, and any other process's, is in the table.", "",
        f"Command: `{COMMAND}` ({result['size']} size, {result['elapsed_s']:.0f} s).", "",
        *_table(_judged(levels, workers=True)), "",
        "Ack latency is from writing a batch to reading its ack (an ack means committed). At "
        "the saturating levels it is queueing, not service time: with every stream keeping "
        "batches in flight, latency is what is outstanding divided by the throughput. The "
        "paced level is what an agent sees at that fleet size. Stored = acked compares the "
        "samples the collector's API reports after the load with the samples acked, and the "
        "request records and the process, host and GPU readings in its file with those the "
        "acked batches carried (through commit 5fa2593 it compared samples only).", "",
        *_drain(levels),
        *_targets(levels), "",
        *_workers(levels),
        *_waits(levels), "",
        *_requests(levels),
        *_profile(levels), "",
        *_analysis(levels), "",
    ]
    return "\n".join(lines).rstrip() + "\n"
