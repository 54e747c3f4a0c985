"""The Connect protocol's unary calls over aiohttp, for Pyroscope's Connect services.

Grafana's Pyroscope data source and Pyroscope's SDKs speak Connect (connectrpc.com): a
unary call is `POST /<package>.<Service>/<Method>` whose body is the request message,
binary protobuf (`Content-Type: application/proto`) or protobuf's JSON mapping
(`application/json`), optionally gzipped (`Content-Encoding: gzip`). The answer is the
response message in the same encoding with status 200, or a JSON error
`{"code": "invalid_argument", "message": "..."}` whose HTTP status follows the code.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from pyrometer.collector.errors import BatchLimitError, InvalidBatchError, ShuttingDownError, StorageError
from pyrometer.collector.ingest.pprof_read import inflate

log = logging.getLogger(__name__)

PROTO = "application/proto"
JSON = "application/json"
MAX_BODY_BYTES = 16 * 1024 * 1024  # what gRPC ingest takes in one message
_CHUNK = 64 * 1024
# Connect's codes and the HTTP status each is sent with (connectrpc.com/docs/protocol)
HTTP_STATUS = {
    "invalid_argument": 400, "unauthenticated": 401, "permission_denied": 403,
    "not_found": 404, "resource_exhausted": 429, "internal": 500, "unimplemented": 501,
    "unavailable": 503,
}

Req = TypeVar("Req", bound=Message)


class ConnectError(Exception):
    """A call's failure, answered as Connect's JSON error with the code's HTTP status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_response(error: ConnectError) -> web.Response:
    return web.json_response({"code": error.code, "message": error.message},
                             status=HTTP_STATUS[error.code])


async def read_body(request: web.Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole request body, inflated; ConnectError past `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise ConnectError("resource_exhausted", f"request body over the limit of {limit} bytes")
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ConnectError("resource_exhausted", f"request body over the limit of {limit} bytes")
        parts.append(chunk)
    # aiohttp has already undone a Content-Encoding (gzip, deflate); a body that is still
    # gzipped (a gzipped pprof posted as it is) is inflated here, under the same limit
    body = b"".join(parts)
    try:
        return inflate(body, limit, "the request body")
    except BatchLimitError as exc:
        raise ConnectError("resource_exhausted", str(exc)) from None
    except InvalidBatchError as exc:
        raise ConnectError("invalid_argument", str(exc)) from None


def codec(request: web.Request) -> str:
    """PROTO or JSON, from the request's Content-Type; ConnectError for anything else."""
    kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if kind in (PROTO, "application/x-protobuf", "application/protobuf"):
        return PROTO
    if kind == JSON:
        return JSON
    raise ConnectError("invalid_argument", f"Content-Type {kind[:64]!r} is not a Connect unary "
                                           f"encoding; send {PROTO} or {JSON}")


def decode(message_type: type[Req], body: bytes, kind: str) -> Req:
    message = message_type()
    try:
        if kind == PROTO:
            message.ParseFromString(body)
        else:
            json_format.Parse(body or b"{}", message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, RuntimeError, ValueError) as exc:
        name = message_type.DESCRIPTOR.full_name
        raise ConnectError("invalid_argument", f"body is not a valid {name}: {exc}") from None
    return message


def encode(message: Message, kind: str) -> web.Response:
    if kind == PROTO:
        return web.Response(body=message.SerializeToString(), content_type=PROTO)
    return web.Response(body=json_format.MessageToJson(message, indent=None).encode(),
                        content_type=JSON)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def unary(message_type: type[Req], call: Callable[[web.Request, Req], Awaitable[Message]]) -> Handler:
    """An aiohttp handler for one Connect unary method: decode, `call`, encode, map errors."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            kind = codec(request)
            body = await read_body(request)
            return encode(await call(request, decode(message_type, body, kind)), kind)
        except ConnectError as error:
            return error_response(error)
        except BatchLimitError as exc:
            return error_response(ConnectError("resource_exhausted", str(exc)))
        except InvalidBatchError as exc:
            return error_response(ConnectError("invalid_argument", str(exc)))
        except ShuttingDownError as exc:
            return error_response(ConnectError("unavailable", str(exc)))
        except StorageError:
            log.exception("%s failed", request.path)
            return error_response(ConnectError("internal", "the collector's storage failed; see its log"))

    return handle


def unimplemented(path: str, why: str) -> Handler:
    """A handler that answers every call of `path` with Connect's `unimplemented`."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return error_response(ConnectError("unimplemented", f"{path} is not supported by Pyrometer: {why}"))

    return handle
