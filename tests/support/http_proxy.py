"""A forward HTTP proxy on 127.0.0.1 for tests: logs every request, and may map ports to others.

Plain requests (``GET http://host:port/path HTTP/1.1``) are forwarded one per connection (the
forwarded request says ``Connection: close``); ``CONNECT host:port`` opens a tunnel (https targets).
``ports`` maps a port the client is told to use, on which nothing listens, to the real service: a
client that bypasses the proxy gets "connection refused", so a test run through it proves that
every call took the proxy. ``log`` holds ``"METHOD absolute-url"`` or ``"CONNECT host:port"`` lines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from yarl import URL

_HEAD_LIMIT = 64 * 1024
_HOP_HEADERS = frozenset({"connection", "proxy-connection", "keep-alive", "proxy-authorization"})


@dataclass
class HttpProxy:
    ports: dict[int, int] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _pipes: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.log if needle in line]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _target(self, host: str, port: int) -> tuple[str, int]:
        return host, self.ports.get(port, port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._pipes.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _HEAD_LIMIT:
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            self.log.append(f"CONNECT {target}")
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target(host, int(port)))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._splice(reader, writer, upstream_reader, upstream_writer)
            return
        url = URL(target)
        self.log.append(f"{method} {target}")
        assert url.host is not None
        upstream_reader, upstream_writer = await asyncio.open_connection(
            *self._target(url.host, url.port or 80)
        )
        headers = [
            line
            for line in header_lines
            if line and line.split(":", 1)[0].strip().lower() not in _HOP_HEADERS
        ]
        forwarded = f"{method} {url.raw_path_qs} {version}\r\n" + "".join(f"{h}\r\n" for h in headers)
        upstream_writer.write((forwarded + "Connection: close\r\n\r\n").encode("latin-1"))
        await self._splice(reader, writer, upstream_reader, upstream_writer)

    async def _splice(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()

        upstream = asyncio.create_task(pipe(upstream_reader, client_writer))
        downstream = asyncio.create_task(pipe(client_reader, upstream_writer))
        try:
            # The answer is over when the server closes; the client may keep its side open.
            await upstream
        finally:
            downstream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await downstream
            upstream_writer.close()
            with contextlib.suppress(ConnectionError):
                await upstream_writer.wait_closed()


@contextlib.asynccontextmanager
async def http_proxy(ports: dict[int, int] | None = None) -> AsyncIterator[HttpProxy]:
    proxy = HttpProxy(ports=dict(ports or {}))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
