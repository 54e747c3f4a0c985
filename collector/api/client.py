"""Command-line clients of the HTTP API (standard library only: the agent image runs them)."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pyrometer.agent.shared import credentials
from pyrometer.agent.shared.errors import EXIT_USAGE
from pyrometer.collector.errors import CollectorError
from pyrometer.collector.render import formats


class ApiError(CollectorError):
    """The API answered with an error, or could not be reached."""

    exit_code = EXIT_USAGE  # a URL, token or CA that the user gave and must correct


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """What a CLI client sends and trusts: a bearer token, and a CA for an HTTPS collector
    whose certificate the system's roots do not vouch for."""

    token: str | None = field(default=None, repr=False)
    ca_file: str | None = None


def add_api_arguments(parser: argparse.ArgumentParser, *, window: bool) -> None:
    """What every client command takes: the API's URL, the service, with `window` its
    --from/--to, and the credentials (add_auth_arguments)."""
    parser.add_argument("--url", default="http://127.0.0.1:7071", help="collector HTTP API base URL")
    parser.add_argument("--service", required=True)
    if window:
        parser.add_argument("--from", dest="start", default="now-1h",
                            help="window start: RFC 3339, unix seconds or now-15m (default now-1h)")
        parser.add_argument("--to", dest="end", default="now", help="window end (default now)")
    add_auth_arguments(parser)


def add_auth_arguments(parser: argparse.ArgumentParser) -> None:
    """--token, --token-file and --ca: every command that talks to the API takes them."""
    credentials.add_token_arguments(parser, "the collector's token (a read-only token is enough "
                                    "for queries)")
    parser.add_argument("--ca", metavar="FILE", help="CA certificate (PEM) to verify an https:// "
                        "collector with [PYROMETER_CA]")


def auth_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> ClientAuth:
    """ClientAuth from add_auth_arguments' flags, else PYROMETER_TOKEN[_FILE] and PYROMETER_CA."""
    env = os.environ if env is None else env
    ca = args.ca or env.get("PYROMETER_CA") or None
    if ca is not None:
        credentials.check_ca(ca, "--ca")
    return ClientAuth(token=credentials.resolve_token(args.token, args.token_file, env), ca_file=ca)


def add_flamegraph_arguments(parser: argparse.ArgumentParser) -> None:
    add_api_arguments(parser, window=True)
    parser.add_argument("--format", default="html", choices=formats.NAMES)
    parser.add_argument("--instance")
    parser.add_argument("--version")
    parser.add_argument("--thread")
    parser.add_argument("-o", "--output", help="file to write (default: standard output)")


def get(base_url: str, path: str, params: dict[str, str | None], timeout: float = 60.0, *,
        auth: ClientAuth | None = None) -> bytes:
    """GET base_url+path?params; an HTTP error becomes ApiError with the server's message."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    request = urllib.request.Request(f"{base_url.rstrip('/')}{path}?{query}")
    return _send(request, base_url, timeout, auth or ClientAuth())


def _send(request: urllib.request.Request, base_url: str, timeout: float, auth: ClientAuth) -> bytes:
    """The answer's body; ApiError (never naming the token) when there is none."""
    if auth.token:
        request.add_header("Authorization", f"Bearer {auth.token}")
    context = ssl.create_default_context(cafile=auth.ca_file) if auth.ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as err:
        hint = " (pass --token or --token-file, or set PYROMETER_TOKEN)" if err.code == 401 else ""
        raise ApiError(f"{err.code} from {base_url}: {_error_message(err.read())}{hint}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ApiError(f"cannot reach the collector at {base_url}: {reason}") from None


def flamegraph_main(args: argparse.Namespace) -> int:
    body = get(args.url, "/api/v1/flamegraph", {
        "service": args.service, "from": args.start, "to": args.end, "format": args.format,
        "instance": args.instance, "version": args.version, "thread": args.thread,
    }, auth=auth_from_args(args))
    if args.output:
        Path(args.output).write_bytes(body)
        print(f"wrote {args.output} ({len(body)} bytes, format {args.format})", file=sys.stderr)
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
    return 0


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


def add_event_arguments(parser: argparse.ArgumentParser) -> None:
    add_api_arguments(parser, window=False)
    parser.add_argument("--kind", default="deploy",
                        help="deploy (default), config, restart, rollback, or another short token")
    parser.add_argument("--version", default="", help="the version deployed (required for a deploy)")
    parser.add_argument("--time", help="when it happened: RFC 3339, unix seconds or now-5m "
                        "(default: now, as the collector sees it)")
    parser.add_argument("--attr", action="append", default=[], type=_attr, metavar="K=V",
                        help="an attribute to record with it, e.g. commit=abc123 (repeatable)")


def _attr(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def post_json(base_url: str, path: str, payload: dict[str, object], timeout: float = 30.0, *,
              auth: ClientAuth | None = None) -> dict[str, object]:
    """POST payload as JSON; the JSON answer, or ApiError with the server's message."""
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}{path}", data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    body = _send(request, base_url, timeout, auth or ClientAuth())
    try:
        answer = json.loads(body)
    except ValueError:
        raise ApiError(f"{base_url} answered with something that is not JSON") from None
    if not isinstance(answer, dict):
        raise ApiError(f"{base_url} answered with an unexpected JSON value")
    return answer


def event_main(args: argparse.Namespace) -> int:
    """Record one event and print one line saying what was recorded."""
    payload: dict[str, object] = {"service": args.service, "kind": args.kind, "version": args.version}
    if args.time is not None:
        payload["time"] = args.time
    if args.attr:
        payload["attrs"] = dict(args.attr)
    stored = post_json(args.url, "/api/v1/events", payload, auth=auth_from_args(args))
    version = f" version {stored.get('version')}" if stored.get("version") else ""
    print(f"recorded {stored.get('kind')} of {stored.get('service')}{version} "
          f"at {stored.get('time')}")
    return 0


def add_spikes_arguments(parser: argparse.ArgumentParser) -> None:
    add_api_arguments(parser, window=True)
    parser.add_argument("--baseline", help="trailing baseline before each bucket (default 30m)")
    parser.add_argument("--step", help="bucket length (default 10s)")
    parser.add_argument("--percentile", choices=("p95", "p99", "max"), help="default p99")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def spikes_main(args: argparse.Namespace) -> int:
    """Print the spikes in the window with their likeliest causes (or the JSON)."""
    from pyrometer.collector.analysis.text import to_text  # light: standard library only

    body = get(args.url, "/api/v1/spikes", {
        "service": args.service, "from": args.start, "to": args.end, "baseline": args.baseline,
        "step": args.step, "percentile": args.percentile,
    }, auth=auth_from_args(args))
    if args.json:
        sys.stdout.buffer.write(body + b"\n")
        sys.stdout.buffer.flush()
        return 0
    try:
        doc = json.loads(body)
    except ValueError:
        raise ApiError(f"{args.url} answered with something that is not JSON") from None
    print(to_text(doc))
    return 0
