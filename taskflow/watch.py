"""`taskflow watch ID`: follow one task's event stream until it ends.

Reads `GET /tasks/{id}/events` as Server-Sent Events, prints each change as one JSON
line, and resumes with `Last-Event-ID` after a dropped connection (waiting the `retry:`
the server asked for). Exits 0 when the task completes, 1 when it fails or is cancelled
(its last event: a retried task's history has earlier terminal events), 2 when there is no
such task or the request is refused.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
from aiohttp import ClientError, ClientResponse, ClientSession, ClientTimeout

EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 1}
RETRY_CAP_S = 10.0
# No byte for this long on an open stream: the server sends a comment at least every 15 s.
READ_TIMEOUT_S = 45.0


@dataclass
class SseMessage:
    """One Server-Sent Events message (`id` None when it set none)."""

    data: str
    event: str = "message"
    id: str | None = None


@dataclass
class SseReader:
    """Parses a `text/event-stream` body (the WHATWG rules, minus BOM handling)."""

    last_id: str | None = None
    retry_ms: int | None = None
    _data: list[str] = field(default_factory=list)
    _event: str = ""

    def feed(self, line: str) -> SseMessage | None:
        """Take one line (without its end); return the message it completes, if any."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = SseMessage("\n".join(self._data), self._event or "message", self.last_id)
            self._data, self._event = [], ""
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    async def messages(self, response: ClientResponse) -> AsyncIterator[SseMessage]:
        """The messages of a response body, as they arrive."""
        while True:
            async with asyncio.timeout(READ_TIMEOUT_S):
                raw = await response.content.readline()
            if not raw:
                return
            message = self.feed(raw.decode().rstrip("\r\n"))
            if message is not None:
                yield message


async def watch(base_url: str, task_id: str, token: str | None) -> int:
    """Follow the task until it ends; the exit code of `taskflow watch`."""
    url = f"{base_url.rstrip('/')}/tasks/{task_id}/events"
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    reader = SseReader()
    failures = 0
    last: str | None = None  # the status of the last event printed
    async with ClientSession(timeout=ClientTimeout(total=None, connect=10)) as session:
        while True:
            if reader.last_id is not None:
                headers["Last-Event-ID"] = reader.last_id
            try:
                async with session.get(url, headers=headers) as response:
                    if response.status == 204:  # the last event printed was the task's last
                        return EXIT_CODES.get(last or "", 2)
                    if response.status != 200:
                        print(
                            f"taskflow: {response.status}: {await response.text()}", file=sys.stderr
                        )
                        return 2
                    status = None  # of this response's last event
                    async for message in reader.messages(response):
                        failures = 0
                        if message.event != "status":
                            continue
                        print(message.data, flush=True)
                        status = last = orjson.loads(message.data).get("status")
                    if status in EXIT_CODES:
                        # A terminal event is the end only if it is the task's last: a
                        # retried task's history has more after it, and a server that shuts
                        # down may close the stream anywhere. Asked again from here, the
                        # server answers 204 when it was the last, or goes on.
                        continue
                    print("taskflow: the stream ended before the task, resuming", file=sys.stderr)
            except (ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                print(
                    f"taskflow: stream interrupted ({type(exc).__name__}), resuming",
                    file=sys.stderr,
                )
            failures += 1
            delay = min((reader.retry_ms or 1000) / 1000 * failures, RETRY_CAP_S)
            await asyncio.sleep(delay)
