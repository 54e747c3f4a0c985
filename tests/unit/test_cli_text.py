"""The CLI's pure parts: numbers for people, tables, top functions, the empty-answer
notices, the line for a non-HTTP answer, and help that explains every option."""

from __future__ import annotations

import argparse
import http.client

import pytest

from pyrometer.agent import cli
from pyrometer.collector.api import client, empty
from pyrometer.collector.cli import text
from pyrometer.collector.storage.reads import ProfileLabels
from pyrometer.collector.storage.store import ServiceSummary
from support.ingest_builder import BASE_NS

S = 10**9
QUERY_COMMANDS = ("services", "flamegraph", "diff", "latency", "gpu", "process", "events",
                  "spikes", "event")


@pytest.mark.parametrize(("value", "shown"), [
    (None, "-"), (0, "0.0"), (12.345, "12.3"), (12.35001, "12.4"), (1500.0, "1500.0"),
])
def test_ms_to_a_tenth(value: float | None, shown: str) -> None:
    assert text.ms(value) == shown


@pytest.mark.parametrize(("value", "shown"), [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (5 * 2**20, "5.0 MiB"), (40 * 2**30, "40.0 GiB"), (3 * 2**50, "3072.0 TiB"),
])
def test_bytes_in_binary_units(value: int | None, shown: str) -> None:
    assert text.size(value) == shown


def test_counts_shares_and_plurals() -> None:
    assert (text.number(3), text.number(2.0), text.number(0.123), text.number(0.123, 2)) == (
        "3", "2", "0.1", "0.12")
    assert (text.share(0.642857), text.share(1), text.share(None)) == ("64.3%", "100.0%", "-")
    assert [text.plural(n, w) for n, w in ((1, "GPU"), (2, "GPU"), (0, "process"))] == [
        "1 GPU", "2 GPUs", "0 processes"]


def test_table_aligns_numbers_right_and_names_left() -> None:
    out = text.table(("n", "name"), [("5", "a"), ("12", "bb")])
    assert out.splitlines() == [" n  name", " 5  a", "12  bb"]


def _node(name: str, value: int, *children: dict[str, object]) -> dict[str, object]:
    return {"name": name, "value": value, "children": list(children)}


def test_top_functions_self_and_total_count_recursion_once() -> None:
    # svc -> main(10) -> walk(6) -> walk(4) -> leaf(1); main -> io(3)
    tree = _node("svc", 10, _node("main", 10, _node("walk", 6, _node("walk", 4, _node("leaf", 1))),
                                  _node("io", 3)))
    rows = {r.name: r for r in text.top_functions(tree, 10)}
    assert (rows["walk"].self_samples, rows["walk"].total_samples) == (5, 6)
    assert (rows["main"].self_samples, rows["main"].total_samples) == (1, 10)
    assert [r.name for r in text.top_functions(tree, 2)] == ["walk", "io"]
    assert [r.name for r in text.top_functions(tree, 2, by="total")] == ["main", "walk"]
    table = text.functions_table(text.top_functions(tree, 1), 10).splitlines()
    assert table[1].split() == ["5", "50.0%", "6", "60.0%", "walk"]


def test_top_functions_of_an_empty_tree() -> None:
    assert text.top_functions(_node("svc", 0), 5) == []


LABELS = ProfileLabels(instance=("pod-a", "pod-b"), version=("1.0.0", "1.1.0"),
                       thread=tuple(f"t{i}" for i in range(12)), pid=(100, 200))


def test_filter_notice_names_the_filter_and_the_values_seen() -> None:
    line = empty.filter_notice({"instance": None, "version": "9.9", "pid": None}, LABELS,
                               BASE_NS, BASE_NS + 60 * S)
    assert line == ("no samples with version 9.9 between 2025-06-15T15:06:40.000Z and "
                    "2025-06-15T15:07:40.000Z; versions seen: 1.0.0, 1.1.0")
    assert empty.filter_notice({"pid": 7}, LABELS, 0, S).endswith("pids seen: 100, 200")
    many = empty.filter_notice({"thread": "x;y z"}, LABELS, 0, S)
    assert "thread 'x;y z'" in many and many.endswith("t9 and 2 more")


def test_filter_notice_of_a_combination_that_never_happened() -> None:
    line = empty.filter_notice({"instance": "pod-a", "version": "1.1.0"}, LABELS, 0, S)
    assert line.startswith("no samples with instance pod-a and version 1.1.0 together between")
    assert "instances seen: pod-a, pod-b; versions seen: 1.0.0, 1.1.0" in line


def test_window_notice_says_where_the_data_is() -> None:
    summary = ServiceSummary("svc", ("pod-a",), BASE_NS, BASE_NS + 30 * S, 14)
    line = empty.window_notice(summary, BASE_NS + 3600 * S, BASE_NS + 7200 * S)
    assert line.endswith("it has samples from 2025-06-15T15:06:40.000Z to 2025-06-15T15:07:10.000Z")


def test_an_http2_answer_names_the_grpc_port_and_7071() -> None:
    settings_frame = "\x00\x00\x18\x04\x00\x00\x00\x00\x00"
    line = client._not_http("http://h:7070", http.client.BadStatusLine(settings_frame))
    assert "gRPC ingest port" in line and "7071" in line
    closed = client._not_http("http://h:1", http.client.RemoteDisconnected("closed"))
    assert "closed the connection" in closed


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize("command", QUERY_COMMANDS)
def test_help_explains_every_option_and_shows_its_default(command: str) -> None:
    parser = _subcommands()[command]
    for action in parser._actions:
        assert action.help, f"{command} {action.option_strings} has no help"
    page = parser.format_help()
    assert "--log-level" in page
    if "--from" in page:
        assert "(default: now-1h)" in page and "(default: now)" in page
    assert "(default: http://127.0.0.1:7071)" in page and "default: None" not in page


def test_flamegraph_help_states_the_output_rule() -> None:
    page = " ".join(_subcommands()["flamegraph"].format_help().split())
    assert "with -o FILE the --format (default html) is written to FILE" in page
    assert "a table of the top functions" in page
