"""A network between a browser and the server that a test controls: slow uploads, a
connection that drops, a proxy that fails a request, an answer lost on its way.

Chromium's own offline switch (DevTools network emulation) lets a request already
under way finish, and the server never sees a connection go; this relay really drops
them: `cut()` resets every connection, both ways, and refuses new ones until
`restore()`, as a phone that loses its signal would.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

from playwright.async_api import Page, Route

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


class FlakyGateway:
    """A proxy in front of /files/ that answers the page's first PATCH itself with
    `status` (it never reaches the server), then holds the page's next request there
    until `go_on()`, so a test can see how the page shows the failure. Without a JSON
    error `code`, the answer is a proxy's HTML page."""

    def __init__(self, status: int, code: str = "") -> None:
        self.status = status
        self.code = code
        self.answered = False
        self._go_on = asyncio.Event()

    async def install(self, page: Page) -> None:
        await page.route("**/files/*", self._handle)

    def go_on(self) -> None:
        self._go_on.set()

    async def _handle(self, route: Route) -> None:
        if route.request.method == "PATCH" and not self.answered:
            self.answered = True
            if self.code:  # as the server words its errors
                error = {"error": {"code": self.code, "message": f"A {self.code} error."}}
                await route.fulfill(status=self.status, json=error)
            else:
                await route.fulfill(status=self.status, content_type="text/html",
                                    body=f"<h1>{self.status} from a proxy</h1>")
            return
        await self._go_on.wait()
        await route.continue_()


class LostAnswer:
    """The page's first PATCH reaches the server, and the server's answer is lost on its
    way back: the connection is reset instead. Playwright sends the request itself, with
    the file's bytes from the offset the page asked for (a browser does not hand over a
    file's bytes to an interceptor reliably)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.statuses: list[int] = []  # what the server answered, before it was lost

    async def install(self, page: Page) -> None:
        await page.route("**/files/*", self._handle, times=1)

    async def _handle(self, route: Route) -> None:
        if route.request.method != "PATCH":
            await route.continue_()
            return
        offset = int(route.request.headers["upload-offset"])
        response = await route.fetch(post_data=self.data[offset:])
        self.statuses.append(response.status)
        await route.abort("connectionreset")
