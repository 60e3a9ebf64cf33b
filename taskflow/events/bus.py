"""The event bus: one reader of the global event stream per process, fanned out in memory.

PostgreSQL notifies `taskflow_events` once per statement that wrote history (see the
lifecycle migration); the notification says which transaction wrote, not what. The bus
keeps one shared read position `(xid, id)` and, on each notification, runs ONE query for
all its subscribers: the events after that position and below the horizon
`pg_snapshot_xmin` (every transaction below it has ended, so nothing can still appear
there). While a notified transaction is not yet below the horizon (an older transaction
still runs) it polls every `lag_poll_s`; while it has subscribers it also reads every
`idle_poll_s` (a notification lost with the LISTEN connection is caught up this way, and
at once after the listener reconnects). It queries nothing while nobody listens.

Task streams need no horizon (a task's events are ordered by its `seq`, gap-free in commit
order): for them the same wake-up runs one more query, the events of every watched task
after the last `seq` read for it.

Each subscriber gets a bounded queue. One that does not keep up is dropped: its queue is
emptied, its stream ends, and the client resumes with `Last-Event-ID`. The bus never
waits for a subscriber, so a slow client never slows the pipeline.

A read that fails because PostgreSQL does is retried with a backoff. One that hits a bug
restarts the bus instead of killing it: every stream ends (clients resume, missing
nothing), what the bus held is forgotten, and it reads again after the same backoff.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import uuid
from collections.abc import Callable

import orjson
import structlog
from aiohttp import web

from taskflow.backoff import Backoff
from taskflow.db.listener import EVENTS_CHANNEL, EventListener
from taskflow.db.store import TaskStore
from taskflow.errors import Overloaded, TaskflowError
from taskflow.events.messages import Position, encode_cursor, sse_message
from taskflow.metrics import Metrics
from taskflow.models import StreamEvent

log = structlog.get_logger(__name__)

Filter = Callable[[StreamEvent], bool]


def _position(event: StreamEvent) -> Position:
    return event.position


class Batch:
    """Events of one read, in stream order, with their SSE messages of the global stream.

    One read's batch is shared by every subscriber that takes all of it: its messages
    are encoded once, and joined into one buffer once, whatever the number of streams.
    """

    __slots__ = ("_joined", "events", "messages")

    def __init__(self, events: list[StreamEvent], messages: list[bytes]) -> None:
        self.events = events
        self.messages = messages
        self._joined: bytes | None = None

    def joined(self) -> bytes:
        """Every message, in one buffer (built once)."""
        if self._joined is None:
            self._joined = b"".join(self.messages)
        return self._joined

    def select(self, accept: Filter) -> Batch:
        """The events `accept` takes (self when it takes them all)."""
        kept = [n for n, event in enumerate(self.events) if accept(event)]
        if len(kept) == len(self.events):
            return self
        return Batch([self.events[n] for n in kept], [self.messages[n] for n in kept])

    def after(self, position: Position) -> Batch:
        """The events after `position` (the events are in stream order: a bisection)."""
        if not self.events or self.events[0].position > position:
            return self
        first = bisect.bisect_right(self.events, position, key=_position)
        return Batch(self.events[first:], self.messages[first:])


class Subscription:
    """What one stream receives from the bus: batches of events, at most `capacity` events
    queued (more ends it as lagging).

    `task_id` subscribes to one task's events, `accept` (None: all) filters the rest.
    `start` is the bus position when the subscription began: every event after it is
    delivered (unless the subscription ends first); events at or before it are not.
    """

    def __init__(
        self, bus: EventBus, capacity: int, task_id: uuid.UUID | None, accept: Filter | None
    ) -> None:
        self._bus = bus
        self.task_id = task_id
        self.accept = accept
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue()
        self._queued = 0  # events in the queue
        self._capacity = capacity
        self.start: Position = (0, 0)
        # Why it ended: "lagging", "shutdown", "restart", "disconnected" or "closed".
        self.ended: str | None = None

    def offer(self, batch: Batch) -> None:
        """Queue a batch, or end the subscription as lagging when it would hold too many."""
        if self.ended is not None or not batch.events:
            return
        if self._queued + len(batch.events) > self._capacity:
            self._bus.dropped_lagging(self)
            return
        self._queued += len(batch.events)
        self._queue.put_nowait(batch)

    def end(self, reason: str) -> None:
        """Stop delivering: free what is queued and wake the reader with the end."""
        if self.ended is not None:
            return
        self.ended = reason
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queued = 0
        self._queue.put_nowait(None)

    async def batches(self) -> list[Batch] | None:
        """Wait for events and return every batch queued; None once ended."""
        first = await self._queue.get()
        if first is None:
            return None
        items = [first]
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return None
            items.append(item)
        self._queued -= sum(len(b.events) for b in items)
        return items

    def close(self) -> None:
        """Unsubscribe (idempotent)."""
        self.end("closed")
        self._bus.unsubscribe(self)


class EventBus:
    """Reads the global event stream once for every subscriber of this process."""

    def __init__(
        self,
        store: TaskStore,
        listener: EventListener,
        metrics: Metrics,
        *,
        capacity: int = 10_000,
        batch: int = 5_000,
        lag_poll_s: float = 0.01,
        idle_poll_s: float = 1.0,
    ) -> None:
        self._store = store
        self._listener = listener
        self._metrics = metrics
        self.capacity = capacity
        self._batch = batch
        self._lag_poll_s = lag_poll_s
        self._idle_poll_s = idle_poll_s
        self._global: set[Subscription] = set()
        self._by_task: dict[uuid.UUID, set[Subscription]] = {}
        self._task_seq: dict[uuid.UUID, int] = {}  # per watched task: the last seq read
        self._position: Position | None = None
        self._notified = 0  # the highest xid notified (not yet known to be below the horizon)
        self._horizon = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False

    def start(self) -> None:
        """Listen to the events channel and start the reader task."""
        self._unsubscribe = self._listener.subscribe(EVENTS_CHANNEL, self._on_notify)
        self._task = asyncio.create_task(self._run(), name="event-bus")
        self._task.add_done_callback(self._reader_done)

    def close(self) -> None:
        """End every subscription (their streams close); refuse new ones."""
        self._closed = True
        self._end_all("shutdown")

    def _end_all(self, reason: str) -> None:
        """End every subscription with `reason` and forget them."""
        for subscription in [*self._global, *(s for w in self._by_task.values() for s in w)]:
            subscription.end(reason)
        self._global.clear()
        self._by_task.clear()
        self._task_seq.clear()

    async def stop(self) -> None:
        """Close, stop listening and stop the reader task."""
        self.close()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            # A reader that died was logged then (`_reader_done`): not the stop's error.
            await asyncio.gather(self._task, return_exceptions=True)

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # A bug in a read restarts the reader (`_restart`); if it still dies, a dead
            # reader would leave every stream silent: end them, and take no more.
            log.error("events.bus_died", error=repr(task.exception()))
            self.close()

    async def subscribe(
        self,
        *,
        task_id: uuid.UUID | None = None,
        after_seq: int = 0,
        accept: Filter | None = None,
    ) -> Subscription:
        """A new subscription: to one task's events after `after_seq` (`task_id`), or to the
        global stream's events that `accept` takes (all when None) from the bus position on.

        When the bus had no global subscriber, this first reads the horizon: the position
        starts at the present."""
        if self._closed:
            raise Overloaded("the service is stopping", {})
        subscription = Subscription(self, self.capacity, task_id, accept)
        async with self._lock:
            if task_id is not None:
                self._by_task.setdefault(task_id, set()).add(subscription)
                known = self._task_seq.get(task_id)
                self._task_seq[task_id] = after_seq if known is None else min(known, after_seq)
            else:
                if self._position is None:
                    page = await self._store.stream_events((0, 0), 0)
                    self._position = (page.horizon, 0)
                    self._horizon = page.horizon
                subscription.start = self._position
                self._global.add(subscription)
        self._wake.set()  # the reader may be waiting without a deadline: it has work now
        return subscription

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._global) + sum(len(s) for s in self._by_task.values())

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget `subscription`; with none left the bus stops reading."""
        if subscription.task_id is None:
            self._global.discard(subscription)
            if not self._global and not self._lock.locked():
                self._position = None
            return
        watchers = self._by_task.get(subscription.task_id, set())
        watchers.discard(subscription)
        if not watchers:
            self._by_task.pop(subscription.task_id, None)
            self._task_seq.pop(subscription.task_id, None)

    def dropped_lagging(self, subscription: Subscription) -> None:
        """End a subscription whose queue is full (its client does not keep up)."""
        subscription.end("lagging")
        self.unsubscribe(subscription)
        self._metrics.stream_subscribers_dropped.inc()
        log.warning("events.subscriber_dropped", reason="lagging", capacity=self.capacity)

    def _on_notify(self, payload: str | None) -> None:
        if payload is not None:
            try:
                xid = int(orjson.loads(payload)["xid"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("events.bad_notification", payload=payload[:200])
            else:
                self._notified = max(self._notified, xid)
        self._wake.set()

    async def _run(self) -> None:
        backoff = Backoff(first=0.2, cap=5.0)
        while True:
            if not self._global and not self._by_task:
                timeout: float | None = None
            elif self._global and self._notified >= self._horizon:
                timeout = self._lag_poll_s  # a notified transaction is not below the horizon
            else:
                timeout = self._idle_poll_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while await self._read():
                    pass  # a full page: read on at once
            except TaskflowError as exc:
                delay = backoff.take()
                log.warning("events.read_failed", error=exc.message, retry_in_s=delay)
                await asyncio.sleep(delay)
            except Exception as exc:  # a bug: start again from a clean state
                delay = backoff.take()
                log.error("events.bus_restarting", retry_in_s=delay, exc_info=exc)
                self._metrics.event_bus_restarts.inc()
                self._restart()
                await asyncio.sleep(delay)
            else:
                backoff.reset()

    def _restart(self) -> None:
        """Forget every subscription and the read position, after a read that hit a bug.

        What the bus held may no longer be right, and it is all derived from PostgreSQL:
        each stream ends (its client resumes with `Last-Event-ID`, missing nothing), and
        the next subscription reads the horizon again. New subscriptions are taken meanwhile.
        """
        self._end_all("restart")
        self._position = None
        self._notified = self._horizon = 0

    async def _read(self) -> bool:
        """One read for every subscriber; True when there may be more below the horizon."""
        async with self._lock:
            if self._by_task:
                await self._read_tasks()
            if not self._global or self._position is None:
                self._position = None
                return False
            page = await self._store.stream_events(self._position, self._batch)
            if not self._global:
                self._position = None
                return False
            self._horizon = page.horizon
            if page.events:
                self._fan_out(page.events)
                self._position = page.events[-1].position
            return len(page.events) >= self._batch

    async def _read_tasks(self) -> None:
        """The new events of every watched task, by seq: no horizon to wait for."""
        ids = list(self._task_seq)
        events = await self._store.task_events_since(ids, [self._task_seq[i] for i in ids])
        per_task: dict[uuid.UUID, list[StreamEvent]] = {}
        for event in events:
            per_task.setdefault(event.task_id, []).append(event)
        for task_id, own in per_task.items():
            if task_id in self._task_seq:
                self._task_seq[task_id] = own[-1].event.seq
            batch = Batch(own, [])  # a task stream encodes its own messages (id: seq)
            for subscription in list(self._by_task.get(task_id, ())):
                subscription.offer(batch)

    def _fan_out(self, events: list[StreamEvent]) -> None:
        batch = Batch(events, [sse_message(encode_cursor(e.position), e) for e in events])
        for subscription in list(self._global):
            accept = subscription.accept
            subscription.offer(batch if accept is None else batch.select(accept))


EVENT_BUS = web.AppKey("event_bus", EventBus)
