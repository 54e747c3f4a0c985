"""What the CLI's query commands share: the flags every one takes, checks of those flags
before anything is sent (so a typo is one line that lists what is accepted), and output.

Errors are PyrometerErrors carrying their exit code; agent/cli.py's `main()` prints them
as one line. Times are checked here with the collector's own parser but sent as typed,
so `now-15m` means the collector's now.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.parse
from pathlib import Path

from pyrometer.agent.shared.errors import EXIT_USAGE, ConfigError
from pyrometer.collector.api.client import DEFAULT_URL, ClientAuth, add_auth_arguments, auth_from_args
from pyrometer.collector.errors import CollectorError
from pyrometer.collector.timeparse import (
    DURATION_FORMS,
    TIME_FORMS,
    TimeFormatError,
    format_time,
    parse_duration,
    parse_time,
)


class NothingMatched(CollectorError):
    """The query was answered, but a filter the user gave matched nothing."""

    exit_code = EXIT_USAGE  # the filter is what to change


def add_api_arguments(parser: argparse.ArgumentParser, *, window: bool = True,
                      service: bool = True) -> None:
    """--url, with `service` --service, with `window` --from/--to, and the credentials."""
    parser.add_argument("--url", default=DEFAULT_URL,
                        help="the collector's HTTP API (its --http-listen), not the gRPC port")
    if service:
        parser.add_argument("--service", required=True,
                            help="the service name its agents report (see `pyrometer services`)")
    if window:
        parser.add_argument("--from", dest="start", default="now-1h", metavar="TIME",
                            help="window start: RFC 3339, unix seconds, or now-15m")
        parser.add_argument("--to", dest="end", default="now", metavar="TIME", help="window end")
    add_auth_arguments(parser)


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the API's JSON answer (full precision) instead of text")


def add_step_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--step", metavar="DURATION",
                        help="bucket length, e.g. 10s or 1m (default: about 100 buckets)")


def prepare(args: argparse.Namespace) -> ClientAuth:
    """Check the flags the command has (URL, times, durations); the credentials to send."""
    check_url(args.url)
    now_ns = time.time_ns()
    if hasattr(args, "start"):
        start = check_time("--from", args.start, now_ns)
        end = check_time("--to", args.end, now_ns)
        if start >= end:
            raise ConfigError(f"--from ({format_time(start)}) must be before --to "
                              f"({format_time(end)})")
    for flag in ("baseline_from", "baseline_to", "time"):
        if getattr(args, flag, None) is not None:
            check_time(f"--{flag.replace('_', '-')}", getattr(args, flag), now_ns)
    for flag in ("step", "baseline"):
        if getattr(args, flag, None) is not None:
            check_duration(f"--{flag}", getattr(args, flag))
    return auth_from_args(args)


def check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--url {url!r} is not an http:// or https:// URL; "
                          f"e.g. --url {DEFAULT_URL}")


def check_time(flag: str, text: str, now_ns: int) -> int:
    """`text` as parse_time reads it, or ConfigError listing every accepted form."""
    try:
        return parse_time(text, now_ns)
    except TimeFormatError as err:
        raise ConfigError(f"{flag} {text!r}{_reason(err, text)}; a time is {TIME_FORMS}"
                          ) from None


def check_duration(flag: str, text: str) -> int:
    """`text` as parse_duration reads it, or ConfigError listing every accepted form."""
    try:
        return parse_duration(text)
    except TimeFormatError as err:
        raise ConfigError(f"{flag} {text!r}{_reason(err, text)}; a duration is "
                          f"{DURATION_FORMS}") from None


def _reason(err: TimeFormatError, text: str) -> str:
    # the parser's own hint ("use ...") gives way to the full list of forms, and the
    # value it quotes is already in the line
    reason = str(err).split(": use ")[0]
    for quoted in (repr(text), repr(text.strip())):
        rest = reason[len(quoted):].strip() if reason.startswith(quoted) else ""
        if rest:
            return rest if rest.startswith(":") else f" {rest}"
    return f": {reason}"


def check_output(path: str) -> None:
    """Fail before the query, not after it, when -o cannot be written."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise ConfigError(f"-o {path}: is a directory; name a file")
    if not folder.is_dir():
        raise ConfigError(f"-o {path}: the folder {folder} does not exist")
    if not os.access(target if target.exists() else folder, os.W_OK):
        raise ConfigError(f"-o {path}: not writable (permission denied)")


def write_output(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as err:
        raise ConfigError(f"-o {path}: cannot write it: {err.strerror or err}") from None


def print_bytes(data: bytes) -> None:
    """The API's answer as it is, ending in a newline (a JSON document does not)."""
    sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
    sys.stdout.buffer.flush()


def note(command: str, text: str) -> None:
    """A line for the person beside an answer written elsewhere (to stderr, not stdout)."""
    print(f"pyrometer {command}: {text}", file=sys.stderr)
