"""A TCP proxy that reads the AMQP frames going by, to make RabbitMQ close one channel.

RabbitMQ closes a channel, and only that channel, when its client breaks the protocol
on it: an ack of a delivery tag it never sent, say (406 PRECONDITION_FAILED), or a
consume from a queue that does not exist (404 NOT_FOUND). Nothing outside a connection
can make it do that, so this proxy does it in the client's stream: it sends such an ack
itself, or changes the queue of a `basic.consume` going by. It forwards the client's
bytes a whole frame at a time, so the frame it adds never lands inside another.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pamqp.commands
import pamqp.frame

from tests.integration.proxy import Link, TcpProxy

_PROTOCOL_HEADER = 8  # b"AMQP\x00\x00\x09\x01", sent by the client before any frame
_FRAME_HEADER = 7  # type (1 byte), channel (2), payload size (4); then payload and 0xCE
_METHOD_FRAME = 1
_CONSUME = pamqp.commands.Basic.Consume.index
_CHANNEL_CLOSE = pamqp.commands.Channel.Close.index
_NEVER_DELIVERED = 2**40

Piece = tuple[bytes, int, int | None]  # whole frame, its channel, its method (if one)


@dataclass
class _Frames:
    """Splits one direction of a connection into whole frames."""

    skip: int = 0  # bytes before the first frame
    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Piece]:
        """The frames now complete (a protocol header first, as a piece on channel 0)."""
        self.buffer += data
        pieces: list[Piece] = []
        if self.skip:
            header = bytes(self.buffer[: self.skip])
            del self.buffer[: len(header)]
            self.skip -= len(header)
            pieces.append((header, 0, None))
        while len(self.buffer) >= _FRAME_HEADER:
            size = int.from_bytes(self.buffer[3:7], "big")
            whole = _FRAME_HEADER + size + 1
            if len(self.buffer) < whole:
                break
            frame = bytes(self.buffer[:whole])
            del self.buffer[:whole]
            method = None
            if frame[0] == _METHOD_FRAME and size >= 4:
                method = int.from_bytes(frame[_FRAME_HEADER : _FRAME_HEADER + 4], "big")
            pieces.append((frame, int.from_bytes(frame[1:3], "big"), method))
        return pieces


def _consume_from(frame: bytes, queue: str) -> bytes:
    """The `basic.consume` method frame `frame`, consuming from `queue` instead."""
    _, channel, consume = pamqp.frame.unmarshal(frame)
    assert isinstance(consume, pamqp.commands.Basic.Consume)
    consume.queue = queue
    return pamqp.frame.marshal(consume, channel)


class _AmqpLink(Link):
    def __init__(self) -> None:
        self.from_client = _Frames(skip=_PROTOCOL_HEADER)
        self.from_server = _Frames()
        self.consuming: set[int] = set()


class AmqpProxy(TcpProxy):
    """`TcpProxy` for AMQP. It counts `connections`, lists the `closed_channels` (closed by
    the broker), and can make the broker close a channel (`break_consuming_channel`,
    `misdirect_next_consume`)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self._links: list[_AmqpLink] = []
        self._closing = asyncio.Event()
        self._misdirect: str | None = None
        self.closed_channels: list[int] = []

    @property
    def connections(self) -> int:
        """How many connections went through this proxy."""
        return len(self._links)

    def _link(self) -> Link:
        link = _AmqpLink()
        self._links.append(link)
        return link

    def _passing(self, link: Link, data: bytes, *, to_client: bool) -> bytes:
        assert isinstance(link, _AmqpLink)
        if to_client:
            for _, channel, method in link.from_server.feed(data):
                if method == _CHANNEL_CLOSE:
                    link.consuming.discard(channel)
                    self.closed_channels.append(channel)
                    self._closing.set()
            return data
        passing = bytearray()
        for frame, channel, method in link.from_client.feed(data):
            if method == _CONSUME:
                link.consuming.add(channel)
                if self._misdirect is not None:
                    passing += _consume_from(frame, self._misdirect)
                    self._misdirect = None
                    continue
            passing += frame
        return bytes(passing)

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

    def misdirect_next_consume(self, queue: str) -> None:
        """Make the next `basic.consume` that any client sends consume from `queue`."""
        self._misdirect = queue

    async def closed(self, channel: int, timeout: float) -> None:
        """Wait until RabbitMQ has closed `channel` (its Channel.Close went by)."""
        async with asyncio.timeout(timeout):
            while channel not in self.closed_channels:
                self._closing.clear()
                await self._closing.wait()
