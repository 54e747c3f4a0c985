"""`pyrometer stages`, `requests`, `cost` and `slos`: the API's answers to "where does a
request's time go", "which requests were slow", "what does each release cost" and "how
much error budget is left", as short tables (or the JSON with --json)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pyrometer.collector.api import client
from pyrometer.collector.cli import common, text


def _ms(value: float | None) -> str:
    return text.MISSING if value is None else f"{value:.1f}"


def _get(args: argparse.Namespace, path: str, params: dict[str, Any]) -> tuple[bytes, Any]:
    auth = common.prepare(args)
    body = client.get(args.url, path, params, auth=auth)
    return body, json.loads(body)


def add_stages_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_api_arguments(parser)
    for label in ("instance", "version", "thread"):
        parser.add_argument(f"--{label}", help=f"only samples with this {label}")
    parser.add_argument("--pid", type=int, help="only samples of this process")
    common.add_json_argument(parser)


def stages_main(args: argparse.Namespace) -> int:
    """Each pipeline stage's share of the window's samples and time per request."""
    body, doc = _get(args, "/api/v1/stages", {
        "service": args.service, "from": args.start, "to": args.end, "instance": args.instance,
        "version": args.version, "thread": args.thread,
        "pid": None if args.pid is None else str(args.pid)})
    if args.json:
        common.print_bytes(body)
        return 0
    print(f"{doc['service']}  {doc['from']} .. {doc['to']}  {text.plural(doc['samples'], 'sample')}"
          f", {text.plural(doc['requests'], 'request')}")
    if doc["stages"]:
        print(text.table(("share", "ms/request", "stage"), (
            (text.share(s["share"]), _ms(s["ms_per_request"]), s["stage"]) for s in doc["stages"]),
            left=2))
    return 0


def add_requests_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_api_arguments(parser)
    parser.add_argument("--route", help="only this route")
    parser.add_argument("--instance", help="only this instance")
    parser.add_argument("--limit", type=int, default=20, help="how many, 1-100")
    common.add_json_argument(parser)


def requests_main(args: argparse.Namespace) -> int:
    """The window's slowest requests, slowest first, with their trace ids."""
    body, doc = _get(args, "/api/v1/requests", {
        "service": args.service, "from": args.start, "to": args.end, "route": args.route,
        "instance": args.instance, "limit": str(args.limit)})
    if args.json:
        common.print_bytes(body)
        return 0
    reqs = doc["requests"]
    print(f"{doc['service']}  {doc['from']} .. {doc['to']}  the {text.plural(len(reqs), 'slowest request')}")
    if reqs:
        print(text.table(("ms", "status", "ended", "route", "instance", "version", "trace"), (
            (_ms(r["latency_ms"]), str(r["status"]), r["end"], r["route"] or text.MISSING,
             r["instance"] or text.MISSING, r["version"] or text.MISSING,
             r.get("trace_url") or r.get("trace_id") or text.MISSING) for r in reqs), left=2))
    return 0


def add_cost_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_api_arguments(parser)
    common.add_json_argument(parser)


def cost_main(args: argparse.Namespace) -> int:
    """Per version: requests, p50/p99 and busy GPU-seconds per 1000 requests."""
    body, doc = _get(args, "/api/v1/cost", {"service": args.service, "from": args.start,
                                            "to": args.end})
    if args.json:
        common.print_bytes(body)
        return 0
    print(f"{doc['service']}  {doc['from']} .. {doc['to']}")
    if doc["versions"]:
        print(text.table(("requests", "p50 ms", "p99 ms", "GPUs", "GPU util",
                          "GPU-s/1000 req", "version"), (
            (str(v["requests"]), _ms(v["latency_p50_ms"]), _ms(v["latency_p99_ms"]), str(v["gpus"]),
             text.share(v["gpu_utilization"]),
             text.MISSING if v["gpu_seconds_per_1000_requests"] is None
             else f"{v['gpu_seconds_per_1000_requests']:.2f}", v["version"] or text.MISSING)
            for v in doc["versions"]), left=6))
    for line in doc["comparisons"]:
        print(line)
    if doc.get("notice"):
        print(f"note: {doc['notice']}")
    return 0


def add_slos_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_api_arguments(parser, window=False, service=False)
    parser.add_argument("--service", help="only this service's objectives")
    parser.add_argument("--at", metavar="TIME", help="evaluate at this moment (default now)")
    common.add_json_argument(parser)


def slos_main(args: argparse.Namespace) -> int:
    """Each objective's state, budget left and burn rates."""
    body, doc = _get(args, "/api/v1/slos", {"service": args.service, "at": args.at})
    if args.json:
        common.print_bytes(body)
        return 0
    slos = doc["slos"]
    print(f"at {doc['at']}: {text.plural(len(slos), 'objective')}"
          + ("" if slos else " (the collector has none: start it with --slos FILE)"))
    if slos:
        print(text.table(("state", "budget left", "burn 5m/30m/1h/6h", "objective", "name"), (
            (s["state"], text.share(s["budget_left"]),
             " ".join(f"{b['burn_rate']:.1f}" for b in s["burn_rates"]),
             f"{s['objective']:.2%} < {s['threshold_ms']:g} ms / {s['period']}",
             f"{s['service']}/{s['name']}") for s in slos), left=4))
    return 0
