"""`--proxy LISTEN=UPSTREAM`: a reverse proxy that records every request, no app change.

It sits in front of the model server and forwards each request as it comes: the request
body is streamed up as it arrives and the response body is written back chunk by chunk
as the upstream produces it, so server-sent events and chunked token streams stay live
and no body is ever held whole. Each request becomes one RequestRecord(source="proxy"),
measured with the middleware's RequestProbe and handed to `emit` at once.

aiohttp is the agent's one optional dependency (the "proxy" extra); importing this
module without it raises ConfigError saying how to install it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from pyrometer.agent.requests.probe import RequestProbe, parse_address, template_path, trace_id_of
from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import RequestRecord

try:
    import aiohttp
    from aiohttp import web
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL
except ModuleNotFoundError as missing:
    raise ConfigError("--proxy needs aiohttp, which the base agent install leaves out: "
                      "pip install 'pyrometer[proxy]'") from missing

log = logging.getLogger("pyrometer.agent.requests.proxy")

CONNECT_TIMEOUT_S = 10.0  # no read timeout: a model may think for minutes between tokens
CLIENT_CLOSED = 499  # nginx's status for "the client went away before the response ended"
# RFC 9110 7.6.1: meaningful for one connection only, never forwarded
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})
Emit = Callable[[RequestRecord], None]


def parse_upstream(upstream: str) -> URL:
    """"HOST:PORT" or "http(s)://HOST[:PORT]" as the base URL requests are sent to."""
    try:
        if "://" not in upstream:
            host, port = parse_address(upstream)
            return URL.build(scheme="http", host=host, port=port)
        url = URL(upstream)
        if url.scheme in ("http", "https") and url.host and url.path in ("", "/") and not url.query:
            return url.with_path("")
    except ValueError:
        pass
    raise ConfigError(f"--proxy upstream {upstream!r}: expected HOST:PORT or http://HOST:PORT")


def _hop_by_hop(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    named = headers.getall("connection", [])
    return HOP_BY_HOP | {token.strip().lower() for value in named for token in value.split(",")}


def _forwarded_headers(request: web.BaseRequest) -> CIMultiDict[str]:
    drop = _hop_by_hop(request.headers)
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in drop)
    peer = request.remote or ""
    prior = headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers.setdefault("X-Forwarded-Proto", request.scheme)
    return headers


class ReverseProxy:
    """Serves `listen` (HOST:PORT, port 0 picks one) by forwarding to `upstream`."""

    def __init__(self, listen: str, upstream: str) -> None:
        try:
            self._host, self._port = parse_address(listen, allow_port_zero=True)
        except ValueError as err:
            raise ConfigError(f"--proxy listen address {err}") from None
        self.upstream = parse_upstream(upstream)
        self.requests = 0
        self.upstream_errors = 0
        self._emit: Emit | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None

    async def start(self, emit: Emit) -> int:
        """Open the upstream pool, start serving; returns the bound port."""
        self._emit = emit
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),  # the upstream sees the clients' concurrency
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            auto_decompress=False,  # bytes pass through as sent, Content-Length stays true
            cookie_jar=aiohttp.DummyCookieJar(),  # one client's cookies must not reach another
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        )
        self._runner = web.ServerRunner(web.Server(self._handle), access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError as err:
            await self.close()
            raise ConfigError(f"--proxy cannot listen on {self._host}:{self._port}: {err}") from None
        return int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        probe = RequestProbe(request.method)
        probe.trace_id = trace_id_of(request.headers.get("traceparent"))
        probe.request_bytes = request.content_length or 0  # replaced by the bytes streamed up
        try:
            return await self._forward(request, probe)
        finally:
            self._record(probe, request.path)

    async def _forward(self, request: web.BaseRequest, probe: RequestProbe) -> web.StreamResponse:
        assert self._session is not None, "start() first"
        body = _streamed_body(request, probe) if request.body_exists else None
        url = URL(str(self.upstream) + request.raw_path, encoded=True)  # as sent: no re-quoting
        try:
            upstream = await self._session.request(
                request.method, url, headers=_forwarded_headers(request), data=body,
                allow_redirects=False)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            return self._bad_gateway(probe, err)
        async with upstream:
            probe.status = upstream.status
            drop = _hop_by_hop(upstream.headers)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in drop))
            await response.prepare(request)
            await self._relay(upstream, response, probe, request)
        return response

    async def _relay(self, upstream: aiohttp.ClientResponse, response: web.StreamResponse,
                     probe: RequestProbe, request: web.BaseRequest) -> None:
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                probe.body_chunk(len(chunk))
            await response.write_eof()
            probe.finish()
        except ConnectionResetError:  # the client left; the upstream connection is dropped
            probe.status = CLIENT_CLOSED
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            # headers are out: cut the client's connection so a cut stream never looks whole
            self.upstream_errors += 1
            log.warning("upstream %s broke off %s %s: %r", self.upstream, request.method, request.path, err)
            probe.status = 502
            if request.transport is not None:
                request.transport.close()

    def _bad_gateway(self, probe: RequestProbe, err: BaseException) -> web.Response:
        self.upstream_errors += 1
        text = f"pyrometer proxy: upstream {self.upstream} unreachable: {type(err).__name__}\n"
        probe.status = 502
        probe.body_chunk(len(text))
        return web.Response(status=502, text=text)

    def _record(self, probe: RequestProbe, path: str) -> None:
        end_ns, latency_ns, ttfb_ns = probe.close()
        self.requests += 1
        record = RequestRecord(
            end_ns=end_ns, latency_ns=latency_ns, request_bytes=probe.request_bytes,
            response_bytes=probe.response_bytes, route=template_path(path), method=probe.method,
            status=probe.status or 502, ttfb_ns=ttfb_ns, chunk_gaps_us=tuple(probe.gaps),
            chunk_gaps_dropped=probe.gaps_dropped, source="proxy", trace_id=probe.trace_id,
        )
        if self._emit is not None:
            try:
                self._emit(record)
            except Exception:  # the consumer's problem must not fail the client's request
                log.exception("request record consumer failed")


async def _streamed_body(request: web.BaseRequest, probe: RequestProbe) -> AsyncIterator[bytes]:
    """The request body as it arrives, counted; never read whole."""
    probe.request_bytes = 0
    async for chunk in request.content.iter_any():
        probe.request_bytes += len(chunk)
        yield chunk
