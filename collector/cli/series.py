"""`pyrometer latency`, `pyrometer gpu` and `pyrometer process`: telemetry by step, as
tables rounded for people (ms to 0.1, bytes in KiB/MiB), or the API's JSON with --json."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from pyrometer.collector.api import client
from pyrometer.collector.cli import common, text

Row = Callable[[dict[str, Any]], Sequence[str]]


def _add_series_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_api_arguments(parser)
    common.add_step_argument(parser)
    parser.add_argument("--instance", help="only data of this instance (pod, host)")
    parser.add_argument("--version", help="only data of this version of the service")
    common.add_json_argument(parser)


def add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    _add_series_arguments(parser)
    parser.add_argument("--route", help="only requests to this route")


def add_telemetry_arguments(parser: argparse.ArgumentParser) -> None:
    _add_series_arguments(parser)


def _fetch(args: argparse.Namespace, path: str, **extra: str | None) -> dict[str, Any] | None:
    """The answer as a dict, or None when --json printed it as it came."""
    auth = common.prepare(args)
    body = client.get(args.url, path, {
        "service": args.service, "from": args.start, "to": args.end, "step": args.step,
        "instance": args.instance, "version": args.version, **extra}, auth=auth)
    if args.json:
        common.print_bytes(body)
        return None
    return dict(json.loads(body))


def _head(doc: dict[str, Any], what: str, count: int) -> str:
    return (f"{doc['service']}  {doc['from']} .. {doc['to']}  step {doc['step']}: "
            f"{text.plural(count, what)}")


def latency_main(args: argparse.Namespace) -> int:
    doc = _fetch(args, "/api/v1/latency", route=args.route)
    if doc is None:
        return 0
    points = doc["points"]
    print(_head(doc, "request", sum(p["count"] for p in points)))
    if points:
        print(text.table(
            ("time", "requests", "/s", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms",
             "ttfb p95 ms", "req p95", "resp p95"),
            ((p["time"], str(p["count"]), text.number(p["rate_per_s"]), str(p["errors"]),
              text.ms(p["latency_p50_ms"]), text.ms(p["latency_p95_ms"]),
              text.ms(p["latency_p99_ms"]), text.ms(p["latency_max_ms"]),
              text.ms(p["ttfb_p95_ms"]), text.size(p["request_bytes_p95"]),
              text.size(p["response_bytes_p95"])) for p in points), left=0))
    return 0


def _throttle(reasons: dict[str, float] | None) -> str:
    if not reasons:
        return text.MISSING if reasons is None else "none"
    return " ".join(f"{name} {text.share(part)}" for name, part in sorted(reasons.items()) if part)


def _gpu_row(p: dict[str, Any]) -> Sequence[str]:
    return (p["time"], text.number(p["temperature_c"]),
            f"{text.number(p['sm_clock_mhz'], 0)}/{text.number(p['sm_clock_max_mhz'], 0)}",
            f"{text.number(p['power_w'])}/{text.number(p['power_limit_w'])}",
            f"{text.size(p['memory_used_bytes'])}/{text.size(p['memory_total_bytes'])}",
            text.number(p["utilization_gpu_pct"]), _throttle(p["throttle"]) or "none")


def gpu_main(args: argparse.Namespace) -> int:
    doc = _fetch(args, "/api/v1/gpu")
    if doc is None:
        return 0
    print(_head(doc, "GPU", len(doc["gpus"])))
    if doc.get("notice"):
        print(f"note: {doc['notice']}")
    for gpu in doc["gpus"]:
        print(f"\nGPU {gpu['gpu_index']} {gpu['name']} of {gpu['instance']}")
        print(text.table(("time", "temp C", "SM MHz/max", "power W/limit", "memory used/total",
                          "util %", "throttle"), map(_gpu_row, gpu["points"])))
    return 0


def _process_row(p: dict[str, Any]) -> Sequence[str]:
    return (p["time"], text.number(p["cpu_user"], 2), text.number(p["cpu_system"], 2),
            text.size(p["rss_bytes_max"]), text.number(p["threads_max"]),
            text.number(p["ctx_switches_involuntary"]))


def _host_row(p: dict[str, Any]) -> Sequence[str]:
    return (p["time"], text.number(p["cpu_pct"]), text.number(p["load1"], 2),
            f"{text.size(p['memory_available_bytes_min'])}/{text.size(p['memory_total_bytes'])}",
            text.number(p["psi_cpu_some"]), text.number(p["psi_memory_some"]),
            text.number(p["psi_io_some"]))


def process_main(args: argparse.Namespace) -> int:
    doc = _fetch(args, "/api/v1/process")
    if doc is None:
        return 0
    print(_head(doc, "process", len(doc["processes"])))
    for proc in doc["processes"]:
        print(f"\nprocess {proc['pid']} of {proc['instance']}")
        print(text.table(("time", "cpu user", "cpu sys", "rss max", "threads", "ctx invol"),
                         map(_process_row, proc["points"]), left=0))
    for host in doc["hosts"]:
        print(f"\nhost of {host['instance']}")
        print(text.table(("time", "cpu %", "load1", "mem avail/total", "psi cpu", "psi mem",
                          "psi io"), map(_host_row, host["points"]), left=0))
    return 0
