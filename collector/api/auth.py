"""Bearer-token checks for gRPC ingest (a server interceptor) and the HTTP API (a middleware).

Who may do what, when the collector has tokens (`Tokens.enabled`):

- gRPC `Ingest`: the write token. A missing or unknown token is UNAUTHENTICATED; the
  read-only token is PERMISSION_DENIED. The standard health service stays open, so that
  load balancers and Kubernetes probes, which send no token, can check it.
- HTTP GET/HEAD (the API and /metrics): the read token or the write token (only the
  write token when there is no separate read token), and so do the Connect calls of
  Pyroscope's query API (`POST /querier.v1.QuerierService/...`, for Grafana). Anything else
  (POST /api/v1/events, Pyroscope's `POST /ingest` and `/push.v1.PusherService/Push`): the
  write token. A missing or unknown token is 401 with `WWW-Authenticate: Bearer`; the
  read-only token on a write is 403. /healthz stays open, for the same probes, and so do
  the web page (/) and its static files (/ui/...): they are code, not data, and the page
  asks for a read token when its first API call answers 401.

Tokens are compared in constant time (hmac.compare_digest over SHA-256 digests, which
also hides their length), and appear in no log line and no error message.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pyrometer.collector.config import Tokens

log = logging.getLogger(__name__)

OPEN_GRPC_PREFIXES = ("/grpc.health.v1.Health/",)
OPEN_HTTP_PATHS = frozenset({"/healthz", "/"})
OPEN_HTTP_PREFIXES = ("/ui/",)
# Connect calls are POSTs, but these only read: the read token is enough (Grafana's data source)
READ_POST_PREFIXES = ("/querier.v1.QuerierService/",)
_READ_METHODS = frozenset({"GET", "HEAD"})


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    MISSING = "missing"  # no credentials, or not a bearer token
    UNKNOWN = "unknown"  # a bearer token that is neither of ours
    FORBIDDEN = "forbidden"  # the read token, for a write


def authorize(tokens: Tokens, authorization: str | None, need: Access) -> Verdict:
    """What `tokens` say about an `Authorization` header value (`Bearer <token>`)."""
    if not tokens.enabled:
        return Verdict.ALLOWED
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return Verdict.MISSING
    digest = _digest(presented.strip())
    # both comparisons always run, so the time taken does not say which token matched
    is_write = _same(digest, tokens.write)
    is_read = _same(digest, tokens.read)
    if is_write or (is_read and need is Access.READ):
        return Verdict.ALLOWED
    return Verdict.FORBIDDEN if is_read else Verdict.UNKNOWN


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def _same(digest: bytes, token: str | None) -> bool:
    expected = _digest(token) if token is not None else b"\0" * 32
    return hmac.compare_digest(digest, expected) and token is not None


def _message(verdict: Verdict) -> str:
    if verdict is Verdict.FORBIDDEN:
        return "this token is read-only; this needs the collector's main (write) token"
    return ("missing or wrong token: send 'authorization: Bearer <token>' with the collector's "
            "token (the agent's and CLI's --token, --token-file or PYROMETER_TOKEN)")


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Refuses every gRPC call but the health service's without the write token."""

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = str(details.method)
        if handler is None or method.startswith(OPEN_GRPC_PREFIXES):
            return handler
        verdict = authorize(self._tokens, _authorization(details.invocation_metadata), Access.WRITE)
        if verdict is Verdict.ALLOWED:
            return handler
        log.warning("refused %s call: %s token", method, verdict.value)
        code = (grpc.StatusCode.PERMISSION_DENIED if verdict is Verdict.FORBIDDEN
                else grpc.StatusCode.UNAUTHENTICATED)
        return _refusal(handler, code, _message(verdict))


def _authorization(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
             ) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call with `code` at once,
    before the service sees a single message."""

    async def refuse(_request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    shape = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return shape(refuse, request_deserializer=handler.request_deserializer,
                 response_serializer=handler.response_serializer)


def http_middleware(tokens: Tokens) -> Middleware:
    """An aiohttp middleware enforcing `tokens` on every path but /healthz and the page's."""

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_HTTP_PATHS or request.path.startswith(OPEN_HTTP_PREFIXES):
            return await handler(request)
        reads = request.method in _READ_METHODS or request.path.startswith(READ_POST_PREFIXES)
        need = Access.READ if reads else Access.WRITE
        verdict = authorize(tokens, request.headers.get("Authorization"), need)
        if verdict is Verdict.ALLOWED:
            return await handler(request)
        log.warning("refused %s %s from %s: %s token", request.method, request.path,
                    request.remote, verdict.value)
        if verdict is Verdict.FORBIDDEN:
            return web.json_response({"error": _message(verdict)}, status=403)
        return web.json_response({"error": _message(verdict)}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="pyrometer"'})

    return require_token
