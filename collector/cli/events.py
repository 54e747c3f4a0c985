"""`pyrometer events` (what happened to a service), `pyrometer event` (record one, from
CI/CD) and `pyrometer spikes` (latency spikes and their likeliest causes)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pyrometer.collector.api import client
from pyrometer.collector.cli import common, text


def add_events_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_api_arguments(parser)
    parser.add_argument("--kind", help="only events of this kind (deploy, config, restart, ...)")
    common.add_json_argument(parser)


def events_main(args: argparse.Namespace) -> int:
    """Events of the service in the window, oldest first, one a line."""
    auth = common.prepare(args)
    body = client.get(args.url, "/api/v1/events", {
        "service": args.service, "from": args.start, "to": args.end, "kind": args.kind,
    }, auth=auth)
    if args.json:
        common.print_bytes(body)
        return 0
    doc: dict[str, Any] = json.loads(body)
    events = doc.get("events", [])
    print(f"{doc['service']}  {doc['from']} .. {doc['to']}  "
          f"{text.plural(len(events), f'{args.kind} event' if args.kind else 'event')}"
          + ("  (the earliest shown: narrow the window for the rest)" if doc.get("truncated")
             else ""))
    if events:
        print(text.table(("time", "kind", "version", "source", "instance", "details"),
                         (_event_row(e) for e in events), left=5))
    return 0


def _event_row(event: dict[str, Any]) -> tuple[str, ...]:
    version = event.get("version") or text.MISSING
    if event.get("previous_version"):
        version = f"{event['previous_version']} -> {version}"
    details = [f"pid {event['previous_pid']} -> {event['pid']}" if event.get("previous_pid")
               else ""]
    details += [f"{k}={v}" for k, v in sorted(event.get("attrs", {}).items())]
    return (event["time"], event["kind"], version, event["source"],
            event.get("instance") or text.MISSING, " ".join(d for d in details if d))


def add_event_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_api_arguments(parser, window=False)
    parser.add_argument("--kind", default="deploy",
                        help="deploy, config, restart, rollback, or another short lowercase token")
    parser.add_argument("--version", default="", help="the version deployed (required for a deploy)")
    parser.add_argument("--time", metavar="TIME", help="when it happened: RFC 3339, unix seconds "
                        "or now-5m (default: now, as the collector sees it)")
    parser.add_argument("--attr", action="append", default=[], type=_attr, metavar="K=V",
                        help="an attribute to record with it, e.g. commit=abc123 (repeatable)")


def _attr(value: str) -> tuple[str, str]:
    key, sep, rest = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r}: expected KEY=VALUE")
    return key, rest


def event_main(args: argparse.Namespace) -> int:
    """Record one event and print one line saying what was recorded."""
    auth = common.prepare(args)
    payload: dict[str, object] = {"service": args.service, "kind": args.kind, "version": args.version}
    if args.time is not None:
        payload["time"] = args.time
    if args.attr:
        payload["attrs"] = dict(args.attr)
    stored = client.post_json(args.url, "/api/v1/events", payload, auth=auth)
    version = f" version {stored.get('version')}" if stored.get("version") else ""
    print(f"recorded {stored.get('kind')} of {stored.get('service')}{version} "
          f"at {stored.get('time')}")
    return 0


def add_spikes_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_api_arguments(parser)
    parser.add_argument("--baseline", metavar="DURATION",
                        help="trailing baseline each bucket is compared with (default 30m)")
    parser.add_argument("--step", metavar="DURATION", help="bucket length (default 10s)")
    parser.add_argument("--percentile", choices=("p95", "p99", "max"),
                        help="latency percentile of each bucket (default p99)")
    common.add_json_argument(parser)


def spikes_main(args: argparse.Namespace) -> int:
    """Print the spikes in the window with their likeliest causes (or the JSON)."""
    from pyrometer.collector.analysis.text import to_text  # light: standard library only

    auth = common.prepare(args)
    body = client.get(args.url, "/api/v1/spikes", {
        "service": args.service, "from": args.start, "to": args.end, "baseline": args.baseline,
        "step": args.step, "percentile": args.percentile,
    }, auth=auth)
    if args.json:
        common.print_bytes(body)
        return 0
    try:
        doc = json.loads(body)
    except ValueError:
        raise client.ApiError(f"{args.url} answered with something that is not JSON") from None
    print(to_text(doc))
    return 0
