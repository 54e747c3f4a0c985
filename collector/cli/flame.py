"""`pyrometer services`, `pyrometer flamegraph` and `pyrometer diff`.

What a flame graph command writes (the rule its help states):
- with -o FILE, the --format (default html) goes to FILE, and one line to stderr;
- without -o, an explicit --format goes to standard output as the API answers it, except
  html and pprof to a terminal (20 KB of markup or gzip bytes help nobody there);
- otherwise (no -o, no --format) a short table of the top functions: self and total
  samples and their share, computed from the JSON answer.
A filter that matches nothing is an error whose line is the API's notice, naming the
values that the filter could have matched.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pyrometer.agent.shared.errors import ConfigError
from pyrometer.collector.api import client
from pyrometer.collector.cli import common, text
from pyrometer.collector.render import formats
from pyrometer.collector.timeparse import format_time

_NOT_FOR_TERMINALS = ("html", "pprof")
_FILTERS = ("instance", "version", "thread", "pid")
OUTPUT_RULE = (
    "Output: with -o FILE the --format (default html) is written to FILE; without -o an "
    "explicit --format goes to standard output (html and pprof only when it is not a "
    "terminal); with neither, a table of the top functions is printed.")


def add_services_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_api_arguments(parser, window=False, service=False)
    common.add_json_argument(parser)


def services_main(args: argparse.Namespace) -> int:
    """The services that have profile data, with their instances and time span."""
    auth = common.prepare(args)
    body = client.get(args.url, "/api/v1/services", {}, auth=auth)
    if args.json:
        common.print_bytes(body)
        return 0
    found: list[dict[str, Any]] = json.loads(body).get("services", [])
    if not found:
        print("no services have profile data yet")
        return 0
    print(text.table(("samples", "first seen", "last seen", "service", "instances"), (
        (str(s["samples"]), s["first_seen"], s["last_seen"], s["name"],
         ", ".join(s["instances"])) for s in found), left=2))
    return 0


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instance", help="only samples of this instance (pod, host)")
    parser.add_argument("--version", help="only samples of this version of the service")
    parser.add_argument("--thread", help="only samples of this thread (its name)")
    parser.add_argument("--pid", type=_pid, help="only samples of this process id")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the --format to FILE instead of printing")


def _pid(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) < 2**31:
        raise argparse.ArgumentTypeError(f"{value!r} is not a process id")
    return int(value)


def add_flamegraph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = OUTPUT_RULE
    common.add_api_arguments(parser)
    parser.add_argument("--format", choices=formats.NAMES,
                        help="what to write (default: html with -o, else the table)")
    add_filter_arguments(parser)
    parser.add_argument("--top", type=int, default=20, metavar="N",
                        help="functions in the table")
    parser.add_argument("--sort", choices=("self", "total"), default="self",
                        help="order of the table: by own samples, or with callees")


def filters(args: argparse.Namespace) -> dict[str, str | None]:
    return {name: None if getattr(args, name) is None else str(getattr(args, name))
            for name in _FILTERS}


def choose_format(args: argparse.Namespace, default: str) -> str | None:
    """The format to fetch and write as it is, or None for the text table."""
    if args.output:
        common.check_output(args.output)
        return str(args.format or default)
    if args.format in _NOT_FOR_TERMINALS and sys.stdout.isatty():
        raise ConfigError(f"--format {args.format} is not for a terminal: write it with "
                          f"-o FILE, or redirect standard output")
    return str(args.format) if args.format else None


def flamegraph_main(args: argparse.Namespace) -> int:
    auth = common.prepare(args)
    fmt = choose_format(args, "html")
    params = {"service": args.service, "from": args.start, "to": args.end, **filters(args)}
    answer = client.get_answer(args.url, "/api/v1/flamegraph",
                               {**params, "format": fmt or "json"}, auth=auth)
    samples = int(answer.headers.get("pyrometer-samples", "-1"))
    notice = ""
    if samples == 0:  # why: the API's notice, which only the JSON answer carries
        doc = json.loads(answer.body) if fmt in (None, "json") else client.get_json(
            args.url, "/api/v1/flamegraph", {**params, "format": "json"}, auth=auth)
        notice = str(doc.get("notice") or f"no samples of {args.service} in the window")
        if any(value is not None for value in filters(args).values()):
            raise common.NothingMatched(notice)
    if fmt is None:
        print(_table(json.loads(answer.body), args))
    elif args.output:
        common.write_output(args.output, answer.body)
        empty = f"; {notice}" if notice else ""
        common.note("flamegraph", f"wrote {args.output} ({fmt}, {text.size(len(answer.body))}, "
                    f"{max(samples, 0)} samples{empty})")
    else:
        sys.stdout.buffer.write(answer.body)
        sys.stdout.buffer.flush()
        if notice:
            common.note("flamegraph", notice)
    return 0


def _table(doc: dict[str, Any], args: argparse.Namespace) -> str:
    total = int(doc.get("total", 0))
    given = " ".join(f"{k}={v}" for k, v in filters(args).items() if v is not None)
    kind = "wall-clock samples (idle included)" if doc.get("idle_included") else "samples"
    head = (f"{doc.get('service') or args.service}  {format_time(doc['start_ns'])} .. "
            f"{format_time(doc['end_ns'])}  {total} {kind} at {text.number(doc['rate_hz'])} Hz"
            + (f"  ({given})" if given else ""))
    lines = [head]
    if doc.get("notice"):
        lines.append(f"note: {doc['notice']}")
    if total:
        rows = text.top_functions(doc["tree"], args.top, args.sort)
        lines.append(text.functions_table(rows, total))
    return "\n".join(lines)
