"""A small TCP proxy between the service and a server, to make outages on purpose.

`cut("reset")` is a server that went away: open connections are reset and new ones are
reset at once. `cut("blackhole")` is a network partition: no byte flows any more, open
connections stall and new ones are accepted but never answered, so only the client's own
timeouts end them. `restore()` drops every connection that lived through the cut (as a
real partition long enough for the server to give up would) and forwards normally again.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Literal

CutMode = Literal["reset", "blackhole"]


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port` until cut."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._mode: CutMode | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0
        self.connections_made = 0

    async def start(self) -> int:
        """Listen on a free port of 127.0.0.1 and return it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def cut_mode(self) -> CutMode | None:
        """How the proxy is cut, or None while it forwards."""
        return self._mode

    def cut(self, mode: CutMode) -> None:
        """Start an outage of the given kind."""
        self._mode = mode
        if mode == "reset":
            for link in list(self._links):
                link.abort()
        else:
            self._flowing.clear()

    def restore(self) -> None:
        """End the outage: drop what lived through it, forward new connections again."""
        self._mode = None
        for link in list(self._links):
            link.abort()
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        self.restore()  # aborts every link; their handlers then end by themselves
        handlers = list(self._handlers)
        if handlers:
            _, stuck = await asyncio.wait(handlers, timeout=5)
            for handler in stuck:
                handler.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        if self._mode == "reset":
            writer.transport.abort()
            return
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._links.add(link)
        try:
            if self._mode == "blackhole":
                await self._flowing.wait()  # never answered; restore() aborts it
                return
            try:
                async with asyncio.timeout(10):
                    up_reader, up_writer = await asyncio.open_connection(*self._target)
            except OSError:
                return
            link.upstream = up_writer
            self.connections_made += 1
            link.pumps = [
                asyncio.create_task(self._pump(reader, up_writer), name="proxy-up"),
                asyncio.create_task(self._pump(up_reader, writer), name="proxy-down"),
            ]
            await asyncio.wait(link.pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            link.abort()
            for pump in link.pumps:
                pump.cancel()
            await asyncio.gather(*link.pumps, return_exceptions=True)
            self._links.discard(link)
            self._handlers.discard(handler)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    return
                await self._flowing.wait()
                if writer.transport.is_closing():
                    return
                writer.write(data)
                await writer.drain()
