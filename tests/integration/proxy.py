"""A TCP proxy of our own, to cut the service off from a server without touching it.

The system PostgreSQL and RabbitMQ are shared with other test runs: they are never
stopped. To make one "unreachable", the service under test connects through this proxy
and the test `stop()`s it (closing the listener and every open connection). To make a
client die silently, `freeze_after()` drops what it sends from a given point on. A
network partition, where nothing answers and only the client's own timeouts end a call,
is `partition()` until `heal()`.
"""

from __future__ import annotations

import asyncio
import contextlib


class Link:
    """One forwarded connection; `frozen` once its client's bytes are being dropped."""

    frozen = False
    upstream: asyncio.StreamWriter | None = None  # towards the server


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port` while started."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._freeze_marker: bytes | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    def freeze_after(self, marker: bytes) -> None:
        """The next connection on which the server sends `marker` drops everything its
        client sends from then on (an AMQP client's acks, say) until it is cut."""
        self._freeze_marker = marker

    async def start(self) -> None:
        """Listen (again, on the same port after a `stop()`)."""
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def partition(self) -> None:
        """Let no byte through either way; accept new connections but never answer them."""
        self._flowing.clear()

    def heal(self) -> None:
        """End a partition: cut what lived through it (as a partition long enough for the
        server to give up would), then forward new connections again."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._flowing.set()

    async def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._flowing.set()  # ends a partition too: its stalled connections are cut
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._flowing.is_set():  # partitioned: accepted, never answered
            self._writers.add(writer)
            try:
                await self._flowing.wait()
            finally:
                self._writers.discard(writer)
                writer.transport.abort()
            return
        try:
            async with asyncio.timeout(10):
                up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        link = self._link()
        link.upstream = up_writer
        pipes = {
            asyncio.create_task(self._pipe(reader, up_writer, link, to_client=False)),
            asyncio.create_task(self._pipe(up_reader, writer, link, to_client=True)),
        }
        self._pipes |= pipes
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes -= pipes
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: Link,
        *,
        to_client: bool,
    ) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()  # held, not forwarded, while partitioned
                if writer.transport.is_closing():
                    return
                marker = self._freeze_marker
                if to_client and marker is not None:
                    if marker in tail + data:  # checked before the client can see it
                        link.frozen, self._freeze_marker = True, None
                    tail = (tail + data)[-len(marker) :]
                if link.frozen and not to_client:
                    continue
                writer.write(self._passing(link, data, to_client=to_client))
                await writer.drain()

    def _link(self) -> Link:
        """The state of a new forwarded connection."""
        return Link()

    def _passing(self, link: Link, data: bytes, *, to_client: bool) -> bytes:
        """What of `data` to forward now (a subclass may hold some back): all of it."""
        return data
