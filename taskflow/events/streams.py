"""The two Server-Sent Events streams: one task's history and live events, and every event.

Both subscribe to the bus BEFORE reading the table, then drop what they already sent, so
nothing committed in between is missed or sent twice. Messages are encoded once per event
(the bus does it for the global stream) and written in batches, each write bounded by
`SEND_TIMEOUT_S`: a client that does not read is disconnected, and what waits for it is
bounded by the subscription's queue.

aiohttp-sse's `EventSourceResponse` gives the headers, the keep-alive comments (every
`PING_INTERVAL_S`) and the kernel's TCP user timeout; events are written pre-encoded with
`write` rather than with its `send`, which would encode each message again per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence

import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from taskflow.db.component import STORE
from taskflow.errors import BadRequest, TaskNotFound
from taskflow.events.bus import EVENT_BUS, Batch, Subscription
from taskflow.events.messages import Position, encode_cursor, sse_message
from taskflow.events.schemas import EVENT_STREAM
from taskflow.metrics import METRICS
from taskflow.models import Status, StreamEvent

log = structlog.get_logger(__name__)

PING_INTERVAL_S = 10.0  # the contract: a comment at least every 15 s while idle
SEND_TIMEOUT_S = 10.0
RETRY_MS = 1000
REPLAY_BATCH = 2000
_MAX_SEQ = (1 << 31) - 1


def wants_stream(request: web.Request) -> bool:
    """Whether the client asked for `text/event-stream` (as EventSource does)."""
    return EVENT_STREAM in request.headers.get("Accept", "")


def last_event_id(request: web.Request) -> str | None:
    """The `Last-Event-ID` header, None when absent or empty."""
    value = request.headers.get("Last-Event-ID", "").strip()
    return value or None


def parse_seq(raw: str) -> int:
    """A task stream's `Last-Event-ID`: a `seq` (0 … 2^31-1); `BadRequest` otherwise."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10 or int(raw) > _MAX_SEQ:
        raise BadRequest(
            "Last-Event-ID must be the seq of an event of this task",
            {"Last-Event-ID": ["Not a seq of this task's events."]},
        )
    return int(raw)


class _Stream:
    """One open SSE response: writes with a deadline, counts what it sent."""

    def __init__(self, request: web.Request, kind: str, subscription: Subscription) -> None:
        self.request = request
        self.kind = kind
        self._subscription = subscription
        self._watch: asyncio.Task[None] | None = None
        self.response = EventSourceResponse(
            sep="\n", send_timeout=SEND_TIMEOUT_S, ping_interval=PING_INTERVAL_S
        )
        metrics = request.app[METRICS]
        self._open_streams = metrics.streams_open.labels(kind)
        self._sent = metrics.stream_events_sent.labels(kind)
        self.open = False

    async def __aenter__(self) -> _Stream:
        await self.response.prepare(self.request)
        self._open_streams.inc()
        self.open = True
        # The keep-alive comments end when a write fails: the client is gone, even if no
        # event comes to tell. Then the subscription ends too, and with it the handler.
        self._watch = asyncio.create_task(self.response.wait(), name=f"sse-{self.kind}-watch")
        self._watch.add_done_callback(lambda _task: self._subscription.end("disconnected"))
        await self._write(b"retry: %d\n\n" % RETRY_MS)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._open_streams.dec()
        self.response.stop_streaming()
        if self._watch is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _write(self, data: bytes) -> None:
        if not self.open:
            return
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self.response.write(data)
        except TimeoutError:
            log.warning("events.client_stalled", stream=self.kind)
            self._close(abort=True)
        except (ConnectionError, RuntimeError):  # the client went away
            self._close(abort=False)

    def _close(self, *, abort: bool) -> None:
        self.open = False
        transport = self.request.transport
        if abort and transport is not None:
            transport.abort()

    async def write_batch(self, batch: Batch) -> None:
        """Write a batch of the bus (its buffer is shared by every stream that takes it all)."""
        await self._write(batch.joined())
        self._sent.inc(len(batch.events))

    async def mark(self, event_id: str) -> None:
        """Write an `id` with no data: a position for the client, not an event."""
        await self._write(b"id: %s\n\n" % event_id.encode())

    async def send(self, messages: Sequence[bytes]) -> None:
        """Write `messages` in one write; afterwards `open` is False if the client is gone."""
        if messages:
            await self._write(b"".join(messages))
            self._sent.inc(len(messages))


async def task_stream(request: web.Request, task_id: uuid.UUID) -> web.StreamResponse:
    """`GET /tasks/{id}/events` as a stream: the history after `Last-Event-ID`, then live
    events; it ends after a terminal event. 204 when the client has seen the last event of
    a terminal task."""
    raw = last_event_id(request)
    after = parse_seq(raw) if raw is not None else 0
    store = request.app[STORE]
    state = await store.task_stream_start(task_id)
    if state is None:
        raise TaskNotFound(f"no task has id {task_id}", {"id": str(task_id)})
    status, seq = state
    if after >= seq and status.terminal:
        return web.Response(status=204)
    if after > seq:
        raise BadRequest(
            f"Last-Event-ID {after} is past the last event of the task ({seq})",
            {"Last-Event-ID": [f"The task's last event is {seq}."]},
        )
    subscription = await request.app[EVENT_BUS].subscribe(task_id=task_id, after_seq=seq)
    try:
        history = await store.task_events_after(task_id, after)
        async with _Stream(request, "task", subscription) as stream:
            sent = after
            for event in history:
                await stream.send([sse_message(str(event.event.seq), event)])
                sent = event.event.seq
            if history and history[-1].event.status.terminal:
                return stream.response
            while stream.open:
                batches = await subscription.batches()
                if batches is None:
                    break
                for event in (e for batch in batches for e in batch.events):
                    if event.event.seq <= sent:
                        continue
                    await stream.send([sse_message(str(event.event.seq), event)])
                    sent = event.event.seq
                    if event.event.status.terminal:
                        return stream.response
            return stream.response
    finally:
        subscription.close()


class _Accept:
    """The filter of a global stream: one task, some statuses, or everything."""

    def __init__(self, task_id: uuid.UUID | None, statuses: frozenset[Status]) -> None:
        self.task_id = task_id
        self.statuses = statuses

    def __call__(self, event: StreamEvent) -> bool:
        return (self.task_id is None or event.task_id == self.task_id) and (
            not self.statuses or event.event.status in self.statuses
        )


async def global_stream(
    request: web.Request,
    cursor: Position | None,
    task_id: uuid.UUID | None,
    statuses: frozenset[Status],
) -> web.StreamResponse:
    """`GET /events`: every event after `cursor` (from the present without one), then live."""
    store = request.app[STORE]
    accept = _Accept(task_id, statuses) if task_id is not None or statuses else None
    subscription = await request.app[EVENT_BUS].subscribe(accept=accept)
    try:
        last = subscription.start if cursor is None else cursor
        first = None
        if cursor is not None:
            first = await store.stream_events(last, REPLAY_BATCH, task_id, sorted(statuses))
            if cursor[0] > first.next_xid:
                raise BadRequest(
                    "Last-Event-ID is not a cursor of this stream",
                    {"Last-Event-ID": ["A position the stream has not reached."]},
                )
        async with _Stream(request, "global", subscription) as stream:
            if cursor is None:
                # The starting position as a first `id` with no data (a browser dispatches
                # no event for it, but keeps it as its last event id): a client that loses
                # the stream before any change still resumes from where it started.
                await stream.mark(encode_cursor(last))
            page = first
            while page is not None and stream.open and subscription.ended is None:
                await stream.send([sse_message(encode_cursor(e.position), e) for e in page.events])
                if page.events:
                    last = page.events[-1].position
                if len(page.events) < REPLAY_BATCH:
                    break
                page = await store.stream_events(last, REPLAY_BATCH, task_id, sorted(statuses))
            while stream.open:
                batches = await subscription.batches()
                if batches is None:
                    break
                for batch in batches:
                    fresh = batch.after(last)
                    if fresh.events and stream.open:
                        await stream.write_batch(fresh)
                        last = fresh.events[-1].position
            return stream.response
    finally:
        subscription.close()
