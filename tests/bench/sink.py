"""A stand-in for Pyroscope's server: takes the Python SDK's uploads and sizes them.

What pyroscope-io 1.4.0 sends (found by capturing it, not from its documentation): a
Connect unary call, ``POST /push.v1.PusherService/Push`` with ``Content-Type:
application/proto`` and ``Content-Encoding: gzip``, once per ``upload_interval`` (10 s
by default) and once more at shutdown. The body, once gunzipped, is a
``push.v1.PushRequest``: series, each with its labels (``service_name`` is the
application name) and samples whose ``raw_profile`` is an uncompressed pprof
``Profile`` with one sample type, ``cpu/nanoseconds``, each value a multiple of the
period (10 ms at 100 Hz). So the number of samples an upload holds is the sum of its
values over the period.

The push request is read straight off the protobuf wire format (three message types,
a few fields: no generated code needed); the pprof inside with the profile.proto code
Pyrometer already has. An empty 200 reply is a valid, empty PushResponse.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from pyrometer.proto import profile_pb2

FORMAT = ("Connect unary POST /push.v1.PusherService/Push: a gzip'd push.v1.PushRequest "
          "(application/proto) holding one uncompressed pprof profile per series")
PUSH_PATH = "/push.v1.PusherService/Push"
# field numbers of push.v1 (grafana/pyroscope api/push/v1/push.proto) and types.v1
SERIES, SERIES_LABELS, SERIES_SAMPLES, LABEL_NAME, LABEL_VALUE, RAW_PROFILE = 1, 1, 2, 1, 2, 1
VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True, slots=True)
class Upload:
    """One push as it arrived."""

    service: str
    body_bytes: int  # the request body as sent: gzip'd
    header_bytes: int  # request line and headers, as received
    samples: int
    seconds: float  # the longest time span of its profiles: a whole upload interval or less


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of one protobuf message, in wire order; ValueError if torn."""
    pos = 0
    try:
        while pos < len(buf):
            key, pos = _varint(buf, pos)
            kind = key & 7
            value: int | bytes
            if kind == VARINT:
                value, pos = _varint(buf, pos)
            elif kind == BYTES:
                size, pos = _varint(buf, pos)
                value, pos = buf[pos:pos + size], pos + size
            elif kind in (FIXED64, FIXED32):
                width = 8 if kind == FIXED64 else 4
                value, pos = buf[pos:pos + width], pos + width
            else:
                raise ValueError(f"wire type {kind} is not used by push.v1")
            yield key >> 3, value
    except IndexError:
        raise ValueError("truncated protobuf message") from None


def _submessages(buf: bytes, number: int) -> Iterator[bytes]:
    for field, value in fields(buf):
        if field == number and isinstance(value, bytes):
            yield value


def pprof_samples(raw: bytes) -> tuple[int, float]:
    """Samples in one pprof profile (values are counts, or CPU time in whole periods),
    and the seconds it spans."""
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    profile = profile_pb2.Profile.FromString(raw)
    seconds = profile.duration_nanos / 1e9
    if not profile.sample_type:
        return 0, seconds
    total = sum(sample.value[0] for sample in profile.sample if sample.value)
    unit = profile.string_table[profile.sample_type[0].unit]
    if unit == "count" or profile.period <= 0:
        return total, seconds
    return round(total / profile.period), seconds


def decode_push(body: bytes, encoding: str = "") -> list[tuple[str, int, float]]:
    """(service name, samples, seconds spanned) of each series of a PushRequest body."""
    if encoding == "gzip" or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    out = []
    for series in _submessages(body, SERIES):
        labels = dict(_label(label) for label in _submessages(series, SERIES_LABELS))
        profiles = [pprof_samples(raw) for sample in _submessages(series, SERIES_SAMPLES)
                    for raw in _submessages(sample, RAW_PROFILE)]
        out.append((labels.get("service_name", ""), sum(n for n, _ in profiles),
                    max((t for _, t in profiles), default=0.0)))
    return out


def _label(buf: bytes) -> tuple[str, str]:
    parts = {field: value for field, value in fields(buf) if isinstance(value, bytes)}
    return parts.get(LABEL_NAME, b"").decode(), parts.get(LABEL_VALUE, b"").decode()


def wire_summary(uploads: list[Upload]) -> dict[str, Any] | None:
    """What row 3 shows next to Pyrometer's bytes per sample; None if nothing came."""
    samples = sum(u.samples for u in uploads)
    if not samples:
        return None
    body = sum(u.body_bytes for u in uploads)
    return {"format": FORMAT, "uploads": len(uploads), "bytes": body, "samples": samples,
            "bytes_per_sample": body / samples,
            "header_bytes": sum(u.header_bytes for u in uploads)}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if self.path != PUSH_PATH:
                raise ValueError(f"unexpected path {self.path}")
            series = decode_push(body, self.headers.get("Content-Encoding", ""))
        except (ValueError, OSError, EOFError) as exc:  # torn gzip or protobuf
            self.server.errors.append(f"{self.path}: {exc}")
            self.send_response(400)
        else:
            head = len(self.requestline) + 4 + sum(len(k) + len(v) + 4 for k, v in self.headers.items())
            services = ",".join(sorted({service for service, _, _ in series}))
            self.server.uploads.append(Upload(services, len(body), head, sum(n for _, n, _ in series),
                                              max((t for _, _, t in series), default=0.0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/proto")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # the bench reports what matters; an access log per upload is noise


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.uploads: list[Upload] = []  # list.append is atomic under the GIL
        self.errors: list[str] = []


class PyroscopeSink:
    """The sink on a free loopback port, served from a thread while the context is open."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, name="pyroscope-sink",
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def uploads(self) -> list[Upload]:
        return list(self._server.uploads)

    @property
    def errors(self) -> list[str]:
        return list(self._server.errors)

    def __enter__(self) -> PyroscopeSink:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
