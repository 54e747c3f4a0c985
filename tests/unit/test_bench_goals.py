"""BENCHMARKS.md's goals table reads each figure from its row's own figures."""

from __future__ import annotations

from typing import Any

from bench import goals


def _results() -> dict[str, dict[str, Any]]:
    timing = {"kind": "spikes", "window_s": goals.DAY, "cold_s": 1.0, "warm_s": [0.4, 0.45, 0.6]}
    queries = {"timings": [timing, {"kind": "flamegraph", "window_s": goals.HOUR,
                                    "cold_s": 1.0, "warm_s": [0.2]}],
               "storage": {"file_bytes": 900, "samples": 1000}}
    ingest = {"levels": [
        {"level": {"mode": "closed", "streams": 10}, "samples_per_s": 900_000.0,
         "collector_cpu_s_per_million": 1.0, "ack_ms": {"p99": 900.0}},
        {"level": {"mode": "closed", "streams": 100}, "samples_per_s": 1_600_000.0,
         "collector_cpu_s_per_million": 1.0, "ack_ms": {"p99": 900.0}},
        {"level": {"mode": "paced", "streams": 1000}, "samples_per_s": 100_000.0,
         "collector_cpu_s_per_million": 2.5, "ack_ms": {"p99": 120.0}},
        # the same fleet with another commit wait: shown beside it, never judged
        {"level": {"mode": "paced", "streams": 1000, "commit_delay_ms": 300},
         "samples_per_s": 100_000.0, "collector_cpu_s_per_million": 1.5, "ack_ms": {"p99": 400.0}},
        # a busy server's batches (what requests cost): a larger fleet, never judged either
        {"level": {"mode": "paced", "streams": 2000, "request_rate": 200},
         "samples_per_s": 200_000.0, "collector_cpu_s_per_million": 1.0, "ack_ms": {"p99": 90.0}}]}
    # 0.4 CPU-s of start-up, then 1.08x py-spy's CPU per sample
    agent_round = {"agent": {"samples": 4000, "cpu_s": 0.4 + 1.08, "startup_cpu_s": 0.4,
                             "peak_main_rss_mib": 38.0},
                   "pyspy": {"samples": 4000, "cpu_s": 1.0}}
    slowdown = {"ratios": {"cpu": {"agent": [1.0, 0.99], "pyroscope": [0.98, 0.99]},
                           "threads": {"agent": [0.9], "pyroscope": [0.95]}}}
    return {"queries": {"ok": True, "figures": queries},
            "ingest_load": {"ok": True, "figures": ingest},
            "agent_cost": {"ok": True, "figures": {"rounds": [agent_round]}},
            "slowdown": {"ok": True, "figures": slowdown}}


def test_each_goal_reads_its_figure_and_says_whether_it_was_met() -> None:
    table = {row[0]: row[3:] for row in goals.rows(_results())}
    assert table["spike analysis over 24 h, warm"] == ("450 ms", "<= 500 ms", "met")
    assert table["flame graph, 1 h of 100 instances, warm"][2] == "missed"
    assert table["bytes on disk per sample, whole file"] == ("0.90", "<= 1.0", "met")
    assert table["collector ingest on 2 cores, saturating"][0] == "1,600,000 samples/s"
    assert table["collector CPU per 1M samples at real agent pace, largest fleet"][2] == "missed"
    assert table["ack p99 at real agent pace, largest fleet"][2] == "met"
    amortised = table["agent CPU per 1000 samples vs bare py-spy, start-up amortised over an hour"]
    assert amortised[0] == "1.08x" and amortised[2] == "met"
    assert table["agent main process peak RSS"] == ("38.0 MiB", "< 40 MiB", "met")
    assert table["work ratio, agent less Pyroscope's SDK, worst target of row 1"] == (
        "-0.050", ">= 0", "missed")


def test_a_failed_row_or_a_window_the_size_lacks_is_not_measured() -> None:
    results = _results()
    results["agent_cost"] = {"ok": False, "error": "boom"}
    table = {row[0]: row[3:] for row in goals.rows(results)}
    assert table["agent main process peak RSS"] == ("not measured in this run", "< 40 MiB", "-")
    assert table["flame graph, 24 h, warm"][0] == "not measured in this run"
    text = goals.markdown(results, "tiny")
    assert "size tiny" in text and "nan" not in text.lower()
