"""Reading Server-Sent Events in tests, with the parser `taskflow watch` uses."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import asyncpg
import orjson
from aiohttp import ClientResponse

from taskflow.watch import SseMessage, SseReader

STREAM = {"Accept": "text/event-stream"}


def stream_headers(last_event_id: str | None = None) -> dict[str, str]:
    """The headers of an EventSource request, resuming after `last_event_id` if given."""
    return STREAM if last_event_id is None else {**STREAM, "Last-Event-ID": last_event_id}


async def read_messages(
    response: ClientResponse, count: int | None = None, timeout: float = 20.0
) -> list[SseMessage]:
    """`count` messages of the stream (all of them, until it ends, when None), within
    `timeout` seconds."""
    reader = SseReader()
    messages: list[SseMessage] = []
    async with asyncio.timeout(timeout):
        async for message in reader.messages(response):
            messages.append(message)
            if count is not None and len(messages) == count:
                break
    return messages


def data(message: SseMessage) -> dict[str, Any]:
    """The JSON `data` of a message."""
    value: dict[str, Any] = orjson.loads(message.data)
    return value


async def first_line(response: ClientResponse) -> bytes:
    """The first line the stream sends (it is `retry:`)."""
    async with asyncio.timeout(10):
        return await response.content.readline()


async def non_reading_client(port: int) -> socket.socket:
    """A raw connection to `GET /events` on `port` that never reads, with a small receive
    window (4 KB): what the server sends soon fills the socket buffers. Close it after."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    request = "GET /events HTTP/1.1\r\nHost: taskflow\r\nAccept: text/event-stream\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    return sock


async def flood(db_url: str, tasks: int) -> None:
    """`tasks` tasks inserted in one statement, as another instance would: a burst of
    events for every stream at once."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """INSERT INTO tasks (id, title, source)
               SELECT gen_random_uuid(), 'flood-' || n, 'http'
               FROM generate_series(1, $1::int) AS n""",
            tasks,
        )
    finally:
        await conn.close()
