"""One request's measurement, the datagram it becomes, and the socket that sends it.

Standard library only: the middleware imports this module inside users' apps, so it
must not pull in grpc, psutil, or any other part of the agent. The proxy measures with
the same RequestProbe, so both ways in record the same fields the same way.

Datagram schema, version 1: one UTF-8 JSON object per UDP datagram, compact separators.

    {"v": 1,                    schema version; a listener drops versions it does not know
     "end_ns": int,             wall clock (time.time_ns) when the response body ended
     "latency_ns": int,         monotonic, from the call into the app to the body's end
     "request_bytes": int,      body bytes the app read, else the Content-Length header
     "response_bytes": int,     body bytes the app sent
     "route": str,              templated path (see template_path), at most 200 chars
     "method": str, "status": int, "pid": int,
     "ttfb_ns": int,            optional: from the call to the first non-empty body chunk
     "chunk_gaps_us": [int],    optional: gaps between body chunks, first MAX_GAPS of them
     "chunk_gaps_dropped": int, optional: gaps past MAX_GAPS, counted instead of sent
     "app_size": int,           optional: what the app passed to record_size()
     "trace_id": str}           optional: the W3C trace id (32 lowercase hex digits) the
                                request arrived with, from its traceparent header/metadata
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import socket
import threading
import time
from json.encoder import encode_basestring_ascii as _quote  # C, and ASCII-safe

SCHEMA_VERSION = 1
DEFAULT_ADDRESS = "127.0.0.1:7072"
ADDRESS_ENV = "PYROMETER_REQUESTS_ADDR"
MAX_GAPS = 512  # a long token stream has thousands of chunks; a datagram must stay small
MAX_ROUTE_LEN = 200
REOPEN_AFTER_NS = 5_000_000_000  # a failed resolve is not retried on every request

log = logging.getLogger("pyrometer.middleware")

# Whole path segments that are ids, not routes: numbers, UUIDs, and long random-looking
# tokens (hashes, base64 and prefixed ids such as cus_9s6XKzkNRiz8i3): 16 or more
# characters holding an unbroken run of 12 or more letters and digits with a digit in
# it. Names made of words keep their segment, digits or not: a model name
# (all-MiniLM-L6-v2, bert-base-uncased-v2) or a gRPC service (inference.v1.GRPCInference
# Service) is a bounded, meaningful part of the route. Templating ids keeps the route's
# cardinality bounded.
_ID_SEGMENT = re.compile(
    r"(?<=/)(?:\d+"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[0-9A-Za-z_.~-]{16,}(?:/|$))[0-9A-Za-z_.~-]*?"
    r"(?<![0-9A-Za-z])(?=[0-9A-Za-z]{12,})(?=[A-Za-z]*\d)[0-9A-Za-z]+[0-9A-Za-z_.~-]*)(?=/|$)"
)
# W3C Trace Context: version-traceid-parentid-flags; a version other than 00 may append
# fields after the flags, and the all-zero ids and version ff are invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(?:$|-)")
_ZERO_TRACE = "0" * 32
_HOST_PORT = re.compile(r"^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9_.-]+)):(\d{1,5})$")


def template_path(path: str) -> str:
    """The default route: the path with id-like segments replaced by "{id}".

    "/users/123/orders/9f1c2d3e-0000-4000-8000-00000000abcd" becomes
    "/users/{id}/orders/{id}". Paths that carry other unbounded values (file names,
    slugs without digits) need an explicit route callable.
    """
    route = _ID_SEGMENT.sub("{id}", path) if path else "/"
    return route if len(route) <= MAX_ROUTE_LEN else route[: MAX_ROUTE_LEN - 3] + "..."


def parse_address(address: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """"HOST:PORT" or "[V6]:PORT" as (host, port); ValueError saying what is expected."""
    match = _HOST_PORT.match(address.strip())
    port = int(match.group(3)) if match else -1
    if match is None or not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ValueError(f"{address!r}: expected HOST:PORT, e.g. {DEFAULT_ADDRESS}")
    return match.group(1) or match.group(2), port


def resolve_address(address: str | None) -> tuple[str, int] | None:
    """Where records go: `address` (ValueError if bad), else $PYROMETER_REQUESTS_ADDR, else the default.

    A bad address given as an argument fails the app at start-up, loudly; a bad environment
    variable only logs, so that it cannot stop the app from starting (records are then dropped).
    """
    if address is not None:
        return parse_address(address)
    raw = os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    try:
        return parse_address(raw)
    except ValueError as err:
        log.warning("pyrometer: %s=%s; request records are not sent", ADDRESS_ENV, err)
        return None


def trace_id_of(traceparent: object) -> str | None:
    """The trace id of a W3C traceparent value, or None when it is absent or malformed."""
    if not isinstance(traceparent, str):
        return None
    value = traceparent.strip()
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == "0" * 16 or (
            version == "00" and len(value) != 55):  # version 00 has exactly these four fields
        return None
    return trace_id


_current: contextvars.ContextVar[RequestProbe] = contextvars.ContextVar("pyrometer_request")


def record_size(size: int) -> bool:
    """Attach an app-defined size (tokens, images, batch items) to the current request.

    Works from the request's own code and from tasks and threads that inherit its
    context (asyncio tasks, Starlette/FastAPI's threadpool, contextvars.copy_context()),
    and from a WSGI response generator. Returns False, and records nothing, outside a
    request measured by a Pyrometer middleware or once that request was recorded.
    """
    probe = _current.get(None)
    if probe is None or not probe.open or isinstance(size, bool) or not isinstance(size, int):
        return False
    probe.app_size = size
    return True


class RequestProbe:
    """What one request did, measured on the monotonic clock while it happens."""

    __slots__ = ("start_ns", "method", "status", "request_bytes", "response_bytes", "first_ns",
                 "last_ns", "gaps", "gaps_dropped", "end_ns", "app_size", "open", "trace_id")

    def __init__(self, method: str) -> None:
        self.start_ns = time.perf_counter_ns()
        self.method = method
        self.status = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.first_ns: int | None = None
        self.last_ns = 0
        self.gaps: list[int] = []
        self.gaps_dropped = 0
        self.end_ns: int | None = None
        self.app_size: int | None = None
        self.open = True
        self.trace_id: str | None = None  # set from trace_id_of(), so it is 32 hex digits

    def bind(self) -> contextvars.Token[RequestProbe]:
        """Make this the request record_size() attaches to, in the current context."""
        return _current.set(self)

    def body_chunk(self, size: int) -> None:
        """A chunk of response body handed on; empty chunks are neither bytes nor gaps."""
        if size <= 0:
            return
        now = time.perf_counter_ns()
        if self.first_ns is None:
            self.first_ns = now
        elif len(self.gaps) < MAX_GAPS:
            self.gaps.append((now - self.last_ns) // 1000)
        else:
            self.gaps_dropped += 1
        self.last_ns = now
        self.response_bytes += size

    def finish(self) -> None:
        """The response body ended (first call wins: later ones are cleanup paths)."""
        if self.end_ns is None:
            self.end_ns = time.perf_counter_ns()

    def close(self) -> tuple[int, int, int | None]:
        """Stop measuring: (wall-clock end, latency, ttfb) in nanoseconds."""
        self.open = False
        self.finish()
        end = self.end_ns if self.end_ns is not None else self.start_ns
        wall_end = time.time_ns() - (time.perf_counter_ns() - end)
        ttfb = None if self.first_ns is None else self.first_ns - self.start_ns
        return wall_end, end - self.start_ns, ttfb

    def datagram(self, route: str, pid: int) -> bytes:
        """Close the probe and encode it as a version-1 datagram.

        Formatted by hand rather than with json.dumps, which costs several microseconds
        a call here; every value is an int or goes through json's own string quoting.
        """
        end_ns, latency_ns, ttfb_ns = self.close()
        text = (f'{{"v":{SCHEMA_VERSION},"end_ns":{end_ns},"latency_ns":{latency_ns},'
                f'"request_bytes":{self.request_bytes},"response_bytes":{self.response_bytes},'
                f'"route":{_quote(route[:MAX_ROUTE_LEN])},"method":{_quote(self.method[:16])},'
                f'"status":{int(self.status)},"pid":{pid}')
        if ttfb_ns is not None:
            text += f',"ttfb_ns":{ttfb_ns}'
        if self.gaps:
            text += f',"chunk_gaps_us":[{",".join(map(str, self.gaps))}]'
        if self.gaps_dropped:
            text += f',"chunk_gaps_dropped":{self.gaps_dropped}'
        if self.app_size is not None:
            text += f',"app_size":{int(self.app_size)}'
        if self.trace_id is not None:
            text += f',"trace_id":{_quote(self.trace_id)}'
        return (text + "}").encode()


class DatagramSender:
    """Sends datagrams to one UDP address; never blocks, never raises, counts failures.

    The socket is non-blocking, opened on first use and shared by every thread (a
    datagram send is atomic). An unconnected socket is used on purpose: with the agent
    down, loopback ICMP errors are then not reported back, so nothing piles up.
    """

    def __init__(self, address: tuple[str, int] | None) -> None:
        self.address = address  # None: disabled (bad configuration), every send is dropped
        self.sent = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._target: tuple[object, ...] = ()
        self._retry_at = 0
        self._warned = False

    def send(self, payload: bytes) -> None:
        sock = self._sock or self._open()
        try:
            if sock is None:
                raise OSError("no socket")
            sock.sendto(payload, self._target)
        except Exception as exc:  # the app must never see the agent's trouble
            self.failed(exc)
            return
        with self._lock:
            self.sent += 1

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _open(self) -> socket.socket | None:
        with self._lock:
            if self._sock is not None or self.address is None:
                return self._sock
            if time.monotonic_ns() < self._retry_at:
                return None
            try:
                family, _, _, _, target = socket.getaddrinfo(*self.address, type=socket.SOCK_DGRAM)[0]
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setblocking(False)
            except OSError as exc:
                self._retry_at = time.monotonic_ns() + REOPEN_AFTER_NS
                log.warning("pyrometer: cannot send request records to %s: %s", self.address, exc)
                return None
            self._sock, self._target = sock, tuple(target)
            return sock

    def failed(self, exc: Exception) -> None:
        """Count a datagram that was not sent; log only the first, once."""
        with self._lock:
            self.errors += 1
            warn, self._warned = not self._warned, True
        if warn:  # once per sender: a down agent must not flood the app's log
            log.warning("pyrometer: request record not sent to %s (%r); counting further failures",
                        self.address, exc)
