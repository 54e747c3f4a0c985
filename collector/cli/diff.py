"""`pyrometer diff`: what changed between a baseline window and a target window.

Output follows the flame graph's rule (flame.OUTPUT_RULE): with -o FILE the --format
(default html) goes to FILE, an explicit --format json to standard output, and otherwise
the functions whose share of samples changed most are printed as a table.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pyrometer.collector.api import client
from pyrometer.collector.cli import common, flame, text

FORMATS = ("json", "html")
PER = ("second", "request")


def add_diff_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = flame.OUTPUT_RULE
    common.add_api_arguments(parser)
    parser.add_argument("--baseline-from", metavar="TIME",
                        help="baseline start (default: the window of the same length before --from)")
    parser.add_argument("--baseline-to", metavar="TIME",
                        help="baseline end (default: --baseline-from plus the window's length, "
                             "or --from)")
    parser.add_argument("--format", choices=FORMATS,
                        help="what to write (default: html with -o, else the table)")
    parser.add_argument("--per", choices=PER,
                        help="divide each window's samples by its seconds (the default) or by "
                             "the requests that ended in it, so that more traffic alone is no change")
    flame.add_filter_arguments(parser)
    parser.add_argument("--top", type=int, default=20, metavar="N", help="functions in the table")


def diff_main(args: argparse.Namespace) -> int:
    auth = common.prepare(args)
    fmt = flame.choose_format(args, "html")
    params = {"service": args.service, "from": args.start, "to": args.end,
              "baseline_from": args.baseline_from, "baseline_to": args.baseline_to,
              "per": args.per, **flame.filters(args)}
    answer = client.get_answer(args.url, "/api/v1/flamegraph/diff",
                               {**params, "format": fmt or "json"}, auth=auth)
    notice = ""
    if answer.headers.get("pyrometer-samples") == "0":
        doc = json.loads(answer.body) if fmt in (None, "json") else client.get_json(
            args.url, "/api/v1/flamegraph/diff", {**params, "format": "json"}, auth=auth)
        notice = str(doc.get("notice") or f"no samples of {args.service} in either window")
        if any(value is not None for value in flame.filters(args).values()):
            raise common.NothingMatched(notice)
    if fmt is None:
        print(_table(json.loads(answer.body), args.top))
    elif args.output:
        common.write_output(args.output, answer.body)
        common.note("diff", f"wrote {args.output} ({fmt}, {text.size(len(answer.body))}"
                    + (f"; {notice})" if notice else ")"))
    else:
        common.print_bytes(answer.body)
        if notice:
            common.note("diff", notice)
    return 0


def _table(doc: dict[str, Any], top: int) -> str:
    per = doc["normalisation"]["per"]
    lines = [f"{doc['service']}  {doc['from']} .. {doc['to']} ({doc['target_total']} samples) "
             f"against {doc['baseline_from']} .. {doc['baseline_to']} "
             f"({doc['baseline_total']} samples)"]
    lines += [f"note: {line}" for line in [doc.get("notice"), *doc.get("caveats", [])] if line]
    changes = doc.get("top_changes", [])[:top]
    if changes:
        lines.append(text.table(
            ("baseline", "target", "change", f"baseline/{per[0]}", f"target/{per[0]}", "function"),
            ((text.share(c["baseline_share"]), text.share(c["target_share"]),
              f"{100 * c['share_delta']:+.1f} pt", text.number(c["baseline"]),
              text.number(c["target"]), c["function"]) for c in changes)))
    return "\n".join(lines)

