"""gRPC server interceptors that report every call to the Pyrometer agent.

The gRPC counterpart of the HTTP middleware, for model servers that speak gRPC (a Python
server, or a gateway in front of Triton or TF Serving):

    from pyrometer.agent.grpc_interceptor import PyrometerServerInterceptor
    server = grpc.server(pool, interceptors=[PyrometerServerInterceptor()])
    # grpc.aio: grpc.aio.server(interceptors=[PyrometerAioServerInterceptor()])

Per call it sends one UDP datagram in the middleware's schema (request_probe), to the same
address (`address=`, else $PYROMETER_REQUESTS_ADDR, else 127.0.0.1:7072), with the same
sender: it never blocks and never raises into the server. What the fields hold for a call:

- route: the full method name, "/package.Service/Method" (or what `route=` returns for
  it); method: "GRPC". Calls to methods the server does not implement are not recorded.
- status: the gRPC status code mapped to HTTP as google/rpc/code.proto maps it (OK 200,
  INVALID_ARGUMENT 400, NOT_FOUND 404, RESOURCE_EXHAUSTED 429, CANCELLED 499, INTERNAL
  500, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, ...: HTTP_STATUS below), so that the
  collector's "status >= 500 is an error" holds for gRPC too: the server's own failures
  and deadlines count as errors, the client's mistakes and cancellations do not. A
  handler's exception is recorded with the status the client gets (its abort() code, else
  UNKNOWN) and re-raised unchanged.
- request_bytes, response_bytes: the serialized messages' sizes, summed over a stream.
- ttfb_ns: from the call's arrival to its first response message being serialized (for
  a server stream, its first message; zero-length messages are not counted), and
  chunk_gaps_us: the gaps between response messages. latency_ns: to the call's end.
- trace_id: the W3C trace id of the `traceparent` metadata, when the call carries one.

Put it first in the interceptors list so that it times the others. record_size() works
in handlers, as in the middleware's apps.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import grpc.aio

from pyrometer.agent.requests.probe import (
    DatagramSender,
    RequestProbe,
    record_size,
    resolve_address,
    trace_id_of,
)

__all__ = ["HTTP_STATUS", "PyrometerAioServerInterceptor", "PyrometerServerInterceptor", "http_status",
           "record_size"]

METHOD = "GRPC"
RouteFn = Callable[[str], str]
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,  # the client went away: not the server's error
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status a gRPC status code is recorded as (500 for one not in HTTP_STATUS)."""
    return HTTP_STATUS.get(code, 500)


class _Reporter:
    """The sender and route function one interceptor shares across its calls."""

    def __init__(self, address: str | None, route: RouteFn | None) -> None:
        self.sender = DatagramSender(resolve_address(address))
        self._route = route
        self._pid = os.getpid()

    def report(self, probe: RequestProbe, method: str) -> None:
        """Send the probe's datagram; whatever goes wrong stays here."""
        try:
            if os.getpid() != self._pid:  # forked after construction: a socket of our own
                self._pid = os.getpid()
                self.sender.close()
            self.sender.send(probe.datagram(self._route_of(method), self._pid))
        except Exception as exc:
            self.sender.failed(exc)

    def _route_of(self, method: str) -> str:
        if self._route is not None:
            try:
                return str(self._route(method))
            except Exception:  # a broken route function must not lose the call
                pass
        return method


class _Call:
    """One call being measured: how its handler ended, and its record when the call ends.

    The record is sent from the call's termination callback, which gRPC runs once per call
    after the last message and the status went out, also when the client cancelled or the
    deadline passed while the handler still ran.
    """

    __slots__ = ("probe", "method", "reporter", "aio", "context", "error", "finished", "reported")

    def __init__(self, reporter: _Reporter, details: Any, aio: bool) -> None:
        self.probe = RequestProbe(METHOD)
        self.method = str(details.method)
        self.probe.trace_id = _traceparent(details.invocation_metadata)
        self.reporter = reporter
        self.aio = aio
        self.context: Any = None
        self.error: BaseException | None = None
        self.finished = False
        self.reported = False

    def begin(self, context: Any) -> contextvars.Token[RequestProbe]:
        """The handler starts: ask to hear of the call's end; bind the probe for record_size()."""
        self.context = context
        try:
            if self.aio:
                context.add_done_callback(lambda _context: self.end())
            elif not context.add_callback(self.end):  # the call already ended
                self.end()
        except Exception as exc:
            self.reporter.sender.failed(exc)
        return self.probe.bind()

    def end(self) -> None:
        if self.reported:
            return
        self.reported = True
        try:
            self.probe.status = http_status(self._code())
        except Exception:
            self.probe.status = 500
        self.reporter.report(self.probe, self.method)

    def _code(self) -> grpc.StatusCode:
        code = self.context.code()  # set by the handler: set_code() or abort()
        if code is not None:
            return code
        if self.finished:
            return grpc.StatusCode.OK
        if self.error is not None and not isinstance(self.error, asyncio.CancelledError | GeneratorExit):
            return grpc.StatusCode.UNKNOWN  # what gRPC sends for an exception it did not expect
        # the call ended under a running handler: its deadline, or the client cancelled
        remaining = self.context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED

    def deserializer(self, inner: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
        def deserialize(data: bytes) -> Any:
            self.probe.request_bytes += _size(data)
            return data if inner is None else inner(data)
        return deserialize

    def serializer(self, inner: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
        def serialize(message: Any) -> bytes:
            data = message if inner is None else inner(message)
            self.probe.body_chunk(_size(data))
            return data
        return serialize


def _size(data: object) -> int:
    return len(data) if isinstance(data, bytes | bytearray | memoryview) else 0


def _traceparent(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "traceparent":
            return trace_id_of(value)
    return None


def _reset(token: contextvars.Token[RequestProbe]) -> None:
    try:
        token.var.reset(token)
    except ValueError:  # a different context (a server that hops contexts): harmless
        pass


def _measured(handler: Any, details: Any, reporter: _Reporter, aio: bool) -> Any:
    """`handler` with its behavior and (de)serializers wrapped to measure one call."""
    if handler is None:  # not implemented here: gRPC answers UNIMPLEMENTED, we record nothing
        return None
    try:
        call = _Call(reporter, details, aio)
        deserializer = call.deserializer(handler.request_deserializer)
        serializer = call.serializer(handler.response_serializer)
        if handler.response_streaming:
            kind = "stream_stream" if handler.request_streaming else "unary_stream"
            behavior = _streaming(getattr(handler, kind), call)
        else:
            kind = "stream_unary" if handler.request_streaming else "unary_unary"
            behavior = _unary(getattr(handler, kind), call)
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        return make(behavior, request_deserializer=deserializer, response_serializer=serializer)
    except Exception as exc:  # a handler of a shape we do not know: serve it unmeasured
        reporter.sender.failed(exc)
        return handler


def _unary(inner: Callable[..., Any], call: _Call) -> Callable[..., Any]:
    """A behavior with one response (or, for grpc.aio's reader/writer API, none)."""
    if inspect.iscoroutinefunction(inner):
        async def behavior_async(request: Any, context: Any) -> Any:
            token = call.begin(context)
            try:
                response = await inner(request, context)
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                _reset(token)
            call.finished = True
            return response
        return behavior_async

    def behavior(request: Any, context: Any) -> Any:
        token = call.begin(context)
        try:
            response = inner(request, context)
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            _reset(token)
        call.finished = True
        return response
    return behavior


def _streaming(inner: Callable[..., Any], call: _Call) -> Callable[..., Any]:
    """A behavior with a stream of responses: sync or async generator, or aio's writer API."""
    if inspect.iscoroutinefunction(inner):  # grpc.aio: writes with context.write()
        return _unary(inner, call)
    if inspect.isasyncgenfunction(inner):
        async def behavior_async(request: Any, context: Any) -> AsyncIterator[Any]:
            token = call.begin(context)
            responses = inner(request, context)
            try:
                async for response in responses:
                    yield response
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                await responses.aclose()
                _reset(token)
            call.finished = True
        return behavior_async

    def behavior(request: Any, context: Any) -> Iterator[Any]:
        token = call.begin(context)
        try:
            responses = inner(request, context)
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            _reset(token)
        return _iterate(responses, call)
    return behavior


def _iterate(responses: Any, call: _Call) -> Iterator[Any]:
    token = call.probe.bind()  # the generator's body runs here, for record_size()
    try:
        yield from responses
    except BaseException as exc:  # GeneratorExit too: the server let go of the stream
        call.error = exc
        raise
    finally:
        _reset(token)
    call.finished = True


class PyrometerServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """For `grpc.server(...)`: records every call to an implemented method."""

    def __init__(self, *, address: str | None = None, route: RouteFn | None = None) -> None:
        self._reporter = _Reporter(address, route)
        self.sender = self._reporter.sender

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        return _measured(continuation(handler_call_details), handler_call_details, self._reporter, aio=False)


class PyrometerAioServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """For `grpc.aio.server(...)`: records every call to an implemented method."""

    def __init__(self, *, address: str | None = None, route: RouteFn | None = None) -> None:
        self._reporter = _Reporter(address, route)
        self.sender = self._reporter.sender

    async def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        return _measured(handler, handler_call_details, self._reporter, aio=True)
