"""The HTTP client of the CLI's query commands (standard library only: the agent image
runs them). The commands themselves are in collector/cli/.

Every way a request can fail becomes one ApiError line that says what to change: the
server's own message for an HTTP error, and for an answer that is not HTTP at all (the
gRPC ingest port speaks only HTTP/2) which port the API is on.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyrometer.agent.shared import credentials
from pyrometer.agent.shared.errors import EXIT_USAGE
from pyrometer.collector.errors import CollectorError

DEFAULT_URL = "http://127.0.0.1:7071"
# what an HTTP/2-only server (gRPC) sends first: a frame header whose type byte 0x04 is
# SETTINGS, where an HTTP/1.1 client expects "HTTP/1.1 200 OK"
_HTTP2_SETTINGS_TYPE = 4


class ApiError(CollectorError):
    """The API answered with an error, or could not be reached."""

    exit_code = EXIT_USAGE  # a URL, token or CA that the user gave and must correct


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """What a CLI client sends and trusts: a bearer token, and a CA for an HTTPS collector
    whose certificate the system's roots do not vouch for."""

    token: str | None = field(default=None, repr=False)
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer: its body and headers (names lowercased)."""

    body: bytes
    headers: Mapping[str, str]


def add_auth_arguments(parser: argparse.ArgumentParser) -> None:
    """--token, --token-file and --ca: every command that talks to the API takes them."""
    credentials.add_token_arguments(parser, "bearer token the collector expects (a read-only "
                                    "one is enough for queries)")
    parser.add_argument("--ca", metavar="FILE", help="CA certificate (PEM) to verify an https:// "
                        "collector with [PYROMETER_CA]")


def auth_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> ClientAuth:
    """ClientAuth from add_auth_arguments' flags, else PYROMETER_TOKEN[_FILE] and PYROMETER_CA."""
    env = os.environ if env is None else env
    ca = args.ca or env.get("PYROMETER_CA") or None
    if ca is not None:
        credentials.check_ca(ca, "--ca")
    return ClientAuth(token=credentials.resolve_token(args.token, args.token_file, env), ca_file=ca)


def get(base_url: str, path: str, params: Mapping[str, str | None], timeout: float = 60.0, *,
        auth: ClientAuth | None = None) -> bytes:
    """GET base_url+path?params; an HTTP error becomes ApiError with the server's message."""
    return get_answer(base_url, path, params, timeout, auth=auth).body


def get_answer(base_url: str, path: str, params: Mapping[str, str | None], timeout: float = 60.0,
               *, auth: ClientAuth | None = None) -> Answer:
    """As `get`, with the answer's headers."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    request = urllib.request.Request(f"{base_url.rstrip('/')}{path}?{query}")
    return _send(request, base_url, timeout, auth or ClientAuth())


def get_json(base_url: str, path: str, params: Mapping[str, str | None], timeout: float = 60.0,
             *, auth: ClientAuth | None = None) -> dict[str, object]:
    """As `get`, the answer parsed as a JSON object (else ApiError)."""
    return _json_object(get(base_url, path, params, timeout, auth=auth), base_url)


def post_json(base_url: str, path: str, payload: dict[str, object], timeout: float = 30.0, *,
              auth: ClientAuth | None = None) -> dict[str, object]:
    """POST payload as JSON; the JSON answer, or ApiError with the server's message."""
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}{path}", data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    return _json_object(_send(request, base_url, timeout, auth or ClientAuth()).body, base_url)


def _send(request: urllib.request.Request, base_url: str, timeout: float, auth: ClientAuth
          ) -> Answer:
    """The answer; ApiError (never naming the token) when there is none."""
    if auth.token:
        request.add_header("Authorization", f"Bearer {auth.token}")
    context = ssl.create_default_context(cafile=auth.ca_file) if auth.ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            headers = {name.lower(): value for name, value in response.headers.items()}
            return Answer(bytes(response.read()), headers)
    except urllib.error.HTTPError as err:
        raise ApiError(f"{err.code} from {base_url}: {_error_message(err.code, err.read())}"
                       ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ApiError(f"cannot reach the collector at {base_url}: {reason}") from None
    except http.client.HTTPException as err:
        raise ApiError(_not_http(base_url, err)) from None


def _not_http(base_url: str, err: http.client.HTTPException) -> str:
    """The line for an answer that is not HTTP/1.1, naming the gRPC port when it is that."""
    line = getattr(err, "line", "") or ""
    if isinstance(line, str) and len(line) > 3 and ord(line[3]) == _HTTP2_SETTINGS_TYPE:
        return (f"{base_url} answered in HTTP/2 only: that looks like the collector's gRPC "
                f"ingest port; the HTTP API is on port 7071 by default (--http-listen), "
                f"e.g. --url {DEFAULT_URL}")
    if isinstance(err, http.client.RemoteDisconnected):
        return f"{base_url} closed the connection without answering; is it the collector's HTTP API?"
    return f"{base_url} did not answer in HTTP ({type(err).__name__}); is it the collector's HTTP API?"


def _error_message(status: int, body: bytes) -> str:
    try:
        doc = json.loads(body)
        message, parameter = str(doc["error"]), doc.get("parameter")
    except (ValueError, KeyError, TypeError, AttributeError):
        message, parameter = body[:200].decode("utf-8", "replace").strip() or "no message", None
    if status == 401:
        message += " (pass --token or --token-file, or set PYROMETER_TOKEN)"
    elif status == 404 and parameter == "service":
        message += " (`pyrometer services` lists the services with data)"
    return message


def _json_object(body: bytes, base_url: str) -> dict[str, object]:
    try:
        answer = json.loads(body)
    except ValueError:
        raise ApiError(f"{base_url} answered with something that is not JSON") from None
    if not isinstance(answer, dict):
        raise ApiError(f"{base_url} answered with an unexpected JSON value")
    return answer
