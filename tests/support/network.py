"""A network between a browser and the server that a test controls: slow uploads, and a
connection that drops.

Chromium's own offline switch (DevTools network emulation) lets a request already
under way finish, and the server never sees a connection go; this relay really drops
them: `cut()` resets every connection, both ways, and refuses new ones until
`restore()`, as a phone that loses its signal would.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

PIECE = 64 * 1024


class Relay:
    """127.0.0.1:<port> -> the server, with uploads paced to `rate` bytes per second."""

    def __init__(self, host: str, port: int, rate: int) -> None:
        self.target = (host, port)
        self.rate = rate
        self.down = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self.cut()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def cut(self) -> None:
        """Every connection reset, and new ones refused, until restore()."""
        self.down = True
        for writer in list(self._open):
            writer.transport.abort()
        for pipe in list(self._pipes):
            pipe.cancel()
        if self._pipes:
            await asyncio.wait(self._pipes)

    def restore(self, rate: int | None = None, port: int | None = None) -> None:
        """Connections go through again (at a new rate, or to the server's new port)."""
        self.down = False
        if rate is not None:
            self.rate = rate
        if port is not None:
            self.target = (self.target[0], port)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, upstream}
        pipes = [asyncio.create_task(self._pipe(reader, upstream, paced=True)),
                 asyncio.create_task(self._pipe(upstream_reader, writer, paced=False))]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.wait(pipes)
            self._pipes.difference_update(pipes)
            for end in (writer, upstream):
                self._open.discard(end)
                end.transport.abort()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    paced: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(PIECE):
                sink.write(data)
                await sink.drain()
                if paced:  # pacing, not waiting for anything: the link's bandwidth
                    await asyncio.sleep(len(data) / self.rate)
