"""A TCP proxy that reads the AMQP frames going by, to make RabbitMQ close one channel.

RabbitMQ closes a channel, and only that channel, when its client breaks the protocol
on it: an ack of a delivery tag it never sent, say (406 PRECONDITION_FAILED). Nothing
outside a connection can make it do that, so this proxy sends such an ack itself, in
the client's stream, on the channel the client consumes on. It forwards the client's
bytes a whole frame at a time, so the frame it adds never lands inside another.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pamqp.commands
import pamqp.frame

from tests.integration.proxy import TcpProxy, _Link

_PROTOCOL_HEADER = 8  # b"AMQP\\x00\\x00\\x09\\x01", sent by the client before any frame
_FRAME_HEADER = 7  # type (1 byte), channel (2), payload size (4); then payload and 0xCE
_METHOD_FRAME = 1
_CONSUME = pamqp.commands.Basic.Consume.index
_CHANNEL_CLOSE = pamqp.commands.Channel.Close.index
_NEVER_DELIVERED = 2**40


@dataclass
class _Frames:
    """Splits one direction of a connection into whole frames."""

    skip: int = 0  # bytes before the first frame
    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, int]]]:
        """The whole frames now complete, and the (channel, method) of each method frame."""
        self.buffer += data
        start = min(self.skip, len(self.buffer))
        self.skip -= start
        methods: list[tuple[int, int]] = []
        end = start
        while len(self.buffer) - end >= _FRAME_HEADER:
            kind = self.buffer[end]
            channel = int.from_bytes(self.buffer[end + 1 : end + 3], "big")
            size = int.from_bytes(self.buffer[end + 3 : end + 7], "big")
            whole = _FRAME_HEADER + size + 1
            if len(self.buffer) - end < whole:
                break
            if kind == _METHOD_FRAME and size >= 4:
                at = end + _FRAME_HEADER
                methods.append((channel, int.from_bytes(self.buffer[at : at + 4], "big")))
            end += whole
        complete = bytes(self.buffer[:end])
        del self.buffer[:end]
        return complete, methods


class _AmqpLink(_Link):
    def __init__(self) -> None:
        self.from_client = _Frames(skip=_PROTOCOL_HEADER)
        self.from_server = _Frames()
        self.consuming: set[int] = set()


class AmqpProxy(TcpProxy):
    """`TcpProxy` for AMQP: `break_consuming_channel()`; `closed_channels` by the broker."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self._links: list[_AmqpLink] = []
        self.connections = 0
        self.closed_channels: list[int] = []
        self._closing = asyncio.Event()

    def _link(self) -> _Link:
        link = _AmqpLink()
        self._links.append(link)
        self.connections += 1
        return link

    def _passing(self, link: _Link, data: bytes, *, to_client: bool) -> bytes:
        assert isinstance(link, _AmqpLink)
        frames = link.from_server if to_client else link.from_client
        complete, methods = frames.feed(data)
        for channel, method in methods:
            if not to_client and method == _CONSUME:
                link.consuming.add(channel)
            elif to_client and method == _CHANNEL_CLOSE:
                link.consuming.discard(channel)
                self.closed_channels.append(channel)
                self._closing.set()
        return complete if not to_client else data

    def break_consuming_channel(self) -> int:
        """Ack, on the channel a client consumes on, a delivery RabbitMQ never made; RabbitMQ
        then closes that channel (the connection stays). Returns the channel's number."""
        for link in reversed(self._links):
            upstream = link.upstream
            if link.consuming and upstream is not None and not upstream.transport.is_closing():
                channel = min(link.consuming)
                ack = pamqp.commands.Basic.Ack(delivery_tag=_NEVER_DELIVERED)
                upstream.write(pamqp.frame.marshal(ack, channel))
                return channel
        raise AssertionError("no open connection consumes through this proxy")

    async def closed(self, channel: int, timeout: float) -> None:
        """Wait until RabbitMQ has closed `channel` (its Channel.Close went by)."""
        async with asyncio.timeout(timeout):
            while channel not in self.closed_channels:
                self._closing.clear()
                await self._closing.wait()
