"""The agent's `--requests-listen` endpoint: request datagrams from the middleware.

The listener turns each datagram (schema in request_probe) into a RequestRecord and
hands it on at once; it keeps nothing. Anything else that arrives on the port (other
software, a newer schema, a corrupted or hostile datagram) is dropped and counted by
reason in `rejected`; nothing a datagram holds can stop the listener.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from pyrometer.agent.requests.probe import DEFAULT_ADDRESS, SCHEMA_VERSION, parse_address
from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import RequestRecord

log = logging.getLogger("pyrometer.agent.requests")

MAX_BYTES = 1 << 40  # a terabyte in one request is a corrupted datagram, not a payload
MAX_DURATION_NS = 86_400 * 10**9  # a day
MAX_LIST_GAPS = 4096  # senders cap at 512 today; leave room for others, bound the work
MAX_TEXT = 1024
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
Emit = Callable[[RequestRecord], None]


class Rejected(ValueError):
    """A datagram that is not a valid request record; `reason` is a short fixed label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _int(fields: Mapping[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = fields.get(key, default)
    if value is None:
        raise Rejected(f"missing:{key}")
    if isinstance(value, bool) or not isinstance(value, int):  # JSON true is not 1
        raise Rejected(f"type:{key}")
    if not low <= value <= high:
        raise Rejected(f"range:{key}")
    return value


def _text(fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key)
    if value is None:
        raise Rejected(f"missing:{key}")
    if not isinstance(value, str):
        raise Rejected(f"type:{key}")
    if len(value) > MAX_TEXT:
        raise Rejected(f"range:{key}")
    return value


def _gaps(fields: Mapping[str, Any]) -> tuple[int, ...]:
    value = fields.get("chunk_gaps_us", [])
    if not isinstance(value, list):
        raise Rejected("type:chunk_gaps_us")
    if len(value) > MAX_LIST_GAPS:
        raise Rejected("range:chunk_gaps_us")
    if not all(type(g) is int for g in value):
        raise Rejected("type:chunk_gaps_us")
    if not all(0 <= g <= MAX_DURATION_NS // 1000 for g in value):
        raise Rejected("range:chunk_gaps_us")
    return tuple(value)


def _trace_id(fields: Mapping[str, Any]) -> str | None:
    value = fields.get("trace_id")
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected("type:trace_id")
    if _TRACE_ID.fullmatch(value) is None:
        raise Rejected("range:trace_id")
    return value


def parse_datagram(data: bytes) -> RequestRecord:
    """One datagram as a RequestRecord (source "middleware"), or Rejected with a reason."""
    try:
        fields = json.loads(data)
    except (ValueError, RecursionError):  # bad UTF-8 is a ValueError too; so is "[[[[..."
        raise Rejected("not_json") from None
    if not isinstance(fields, dict):
        raise Rejected("not_object")
    if fields.get("v") != SCHEMA_VERSION or isinstance(fields.get("v"), bool):
        raise Rejected("version")
    latency = _int(fields, "latency_ns", 0, MAX_DURATION_NS)
    ttfb = fields.get("ttfb_ns")
    app_size = fields.get("app_size")
    return RequestRecord(
        end_ns=_int(fields, "end_ns", 1, 2**63 - 1),
        latency_ns=latency,
        request_bytes=_int(fields, "request_bytes", 0, MAX_BYTES),
        response_bytes=_int(fields, "response_bytes", 0, MAX_BYTES),
        route=_text(fields, "route"),
        method=_text(fields, "method"),
        status=_int(fields, "status", 100, 999),
        ttfb_ns=None if ttfb is None else _int(fields, "ttfb_ns", 0, latency),
        chunk_gaps_us=_gaps(fields),
        chunk_gaps_dropped=_int(fields, "chunk_gaps_dropped", 0, 2**31, default=0),
        app_size=None if app_size is None else _int(fields, "app_size", 0, 2**53),
        pid=_int(fields, "pid", 0, 2**31, default=0),
        source="middleware",
        trace_id=_trace_id(fields),
    )


class RequestListener:
    """UDP endpoint on `listen` (HOST:PORT, port 0 picks a free one) feeding `emit`."""

    def __init__(self, listen: str = DEFAULT_ADDRESS) -> None:
        self.listen = listen
        self.received = 0
        self.rejected: dict[str, int] = {}
        self._emit: Emit | None = None
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self, emit: Emit) -> int:
        """Bind and start delivering records to `emit`; returns the bound port."""
        try:
            host, port = parse_address(self.listen, allow_port_zero=True)
        except ValueError as err:
            raise ConfigError(f"--requests-listen {err}") from None
        self._emit = emit
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=(host, port))
        except OSError as err:
            raise ConfigError(
                f"--requests-listen cannot bind udp {self.listen}: {err} (another agent on this "
                "host? give each its own port, or 'off' when no middleware reports to it)"
            ) from None
        self._transport = transport
        return int(transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def datagram(self, data: bytes) -> None:
        """Handle one datagram: parse, emit, or count why not."""
        try:
            record = parse_datagram(data)
        except Rejected as err:
            self.rejected[err.reason] = self.rejected.get(err.reason, 0) + 1
            return
        except Exception:  # a parser bug must cost one datagram, not the listener
            log.exception("request datagram could not be parsed")
            self.rejected["error"] = self.rejected.get("error", 0) + 1
            return
        self.received += 1
        if self._emit is not None:
            try:
                self._emit(record)
            except Exception:
                log.exception("request record consumer failed")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: RequestListener) -> None:
        self._listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._listener.datagram(data)

    def error_received(self, exc: Exception) -> None:  # ICMP noise on a UDP socket
        log.debug("requests listener: %s", exc)
