"""A TCP relay between the service and RabbitMQ that a test can cut, refuse or freeze.

It stands in for network trouble without touching the shared broker: closing *our*
connections is all `rabbitmqctl close_all_connections` would do for these tests.
"""

from __future__ import annotations

import asyncio
import contextlib


class _Link:
    """One relayed connection: the client's side and the broker's side."""

    def __init__(self, client: asyncio.StreamWriter, broker: asyncio.StreamWriter) -> None:
        self.client = client
        self.broker = broker
        self.frozen = False

    def abort(self) -> None:
        for writer in (self.client, self.broker):
            writer.transport.abort()


class TcpProxy:
    """Relays 127.0.0.1:`port` to `upstream`; `accepting=False` turns connections away."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._links: dict[_Link, asyncio.Task[None]] = {}
        self._freeze_marker: bytes | None = None
        self.accepting = True
        self.refused = 0
        self._refusal = asyncio.Event()

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def amqp_url(self) -> str:
        """An AMQP URL (guest/guest) that goes through the proxy."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def freeze_after(self, marker: bytes) -> None:
        """The next connection that carries `marker` to the client silently drops what the
        client sends from then on (its acks never reach the broker), until it is cut."""
        self._freeze_marker = marker

    async def wait_refused(self, count: int, timeout: float = 60.0) -> None:
        """Wait until `count` connections in all were turned away."""
        async with asyncio.timeout(timeout):
            while self.refused < count:
                self._refusal.clear()
                await self._refusal.wait()

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        self.refused += 1
        self._refusal.set()
        writer.transport.abort()

    async def cut(self) -> None:
        """Close every relayed connection at once, on both sides."""
        links = dict(self._links)
        for link in links:
            link.abort()
        await asyncio.gather(*links.values(), return_exceptions=True)

    async def close(self) -> None:
        """Cut everything and stop listening."""
        self.accepting = False
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            self._refuse(writer)
            return
        try:
            broker_reader, broker_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            self._refuse(writer)
            return
        link = _Link(writer, broker_writer)
        task = asyncio.current_task()
        assert task is not None
        self._links[link] = task
        try:
            await asyncio.gather(
                self._pump(reader, broker_writer, link, to_client=False),
                self._pump(broker_reader, writer, link, to_client=True),
            )
        finally:
            link.abort()
            self._links.pop(link, None)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        to_client: bool,
    ) -> None:
        tail = b""
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                marker = self._freeze_marker
                if to_client and marker is not None:
                    if marker in tail + data:
                        link.frozen = True
                        self._freeze_marker = None
                    tail = (tail + data)[-len(marker) :]
                if not to_client and link.frozen:
                    continue  # the client's bytes (acks included) are lost
                writer.write(data)
                await writer.drain()
        link.abort()  # one side ended: end the other too
