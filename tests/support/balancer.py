"""A TCP load balancer for tests: what a Kubernetes Service or an L4 balancer does in
front of several collectors, on 127.0.0.1.

Each new connection goes to the next backend in turn that accepts it (a backend that
refuses, killed say, is skipped, as a balancer's health check would); bytes are copied
both ways until either side closes. `drop()` closes every connection at once, as a
balancer's restart or a node going away does: the clients reconnect and land on other
backends.

It listens on `fronts` ports: a client per port in one test process keeps connections
of its own, where gRPC would share one connection among channels to the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from support.request_servers import free_port


class Balancer:
    """Round-robin TCP forwarding to `backends` ("host:port"), listening on `ports`."""

    def __init__(self, backends: list[str], fronts: int = 1) -> None:
        self.backends = backends
        self.ports = [free_port() for _ in range(fronts)]
        self.connections = 0  # accepted so far
        self.routed: dict[str, int] = dict.fromkeys(backends, 0)  # connections per backend
        self._turn = itertools.cycle(range(len(backends)))
        self._open: set[asyncio.StreamWriter] = set()
        self._by_backend: dict[str, set[asyncio.StreamWriter]] = {b: set() for b in backends}
        self._servers: list[asyncio.Server] = []

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def serving(self) -> set[str]:
        """The backends with a connection open now."""
        return {backend for backend, writers in self._by_backend.items() if writers}

    async def start(self) -> None:
        self._servers = [await asyncio.start_server(self._serve, "127.0.0.1", port)
                         for port in self.ports]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        self.drop()
        for server in self._servers:
            await server.wait_closed()

    def drop(self) -> None:
        """Close every open connection, both sides."""
        for writer in list(self._open):
            writer.close()
        self._open.clear()

    async def _connect(self) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            backend = self.backends[next(self._turn)]
            host, port = backend.rsplit(":", 1)
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                continue  # down: the next one
            return backend, reader, writer
        return None

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        found = await self._connect()
        if found is None:
            client_w.close()
            return
        backend, server_r, server_w = found
        self.routed[backend] += 1
        self._open.update((client_w, server_w))
        self._by_backend[backend].add(server_w)
        try:
            await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))
        finally:
            self._by_backend[backend].discard(server_w)
            for writer in (client_w, server_w):
                self._open.discard(writer)
                writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # CancelledError too: the event loop's end cancels the pipes of connections still open
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
