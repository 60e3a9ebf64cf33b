"""The event bus on its own: batches, each subscription's bounded queue, its reader.

Reading PostgreSQL is tested end to end (tests/integration/test_events.py); here the bus
reads a stand-in for the store's `stream_events` and is woken by hand-made notifications.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from taskflow.errors import Overloaded
from taskflow.events.bus import Batch, EventBus
from taskflow.metrics import Metrics
from taskflow.models import Status, StatusEvent, StreamEvent
from tests.unit.helpers import eventually, sample

TASK = uuid.UUID(int=7)
NEVER_USED: Any = object()


def event(xid: int, id_: int, status: Status = Status.NEW) -> StreamEvent:
    return StreamEvent(xid, id_, TASK, StatusEvent(id_, status, 0, datetime.now(UTC)))


def batch(*positions: tuple[int, int]) -> Batch:
    events = [event(*p) for p in positions]
    return Batch(events, [f"{p}".encode() for p in positions])


def bus(
    metrics: Metrics | None = None, *, store: Any = NEVER_USED, listener: Any = NEVER_USED
) -> EventBus:
    """A bus of capacity 3 whose reader reads only when woken (no polling)."""
    return EventBus(
        store, listener, metrics or Metrics(), capacity=3, lag_poll_s=60, idle_poll_s=60
    )


def test_after_keeps_only_the_events_past_a_position_with_their_messages() -> None:
    whole = batch((5, 1), (5, 2), (7, 1))
    assert whole.after((4, 9)) is whole
    later = whole.after((5, 2))
    assert [e.position for e in later.events] == [(7, 1)]
    assert later.messages == [b"(7, 1)"]
    assert whole.after((5, 1)).messages == [b"(5, 2)", b"(7, 1)"]
    assert whole.after((7, 1)).events == []
    assert Batch([], []).after((1, 1)).events == []


def test_select_keeps_what_the_filter_takes_with_their_messages() -> None:
    whole = Batch(
        [event(1, 1, Status.NEW), event(1, 2, Status.FAILED), event(2, 1, Status.NEW)],
        [b"a", b"b", b"c"],
    )
    assert whole.select(lambda e: True) is whole
    new = whole.select(lambda e: e.event.status is Status.NEW)
    assert [e.position for e in new.events] == [(1, 1), (2, 1)]
    assert new.joined() == b"ac"


async def test_a_subscription_gets_its_batches_and_its_room_back_once_read() -> None:
    metrics = Metrics()
    subscription = await bus(metrics).subscribe(task_id=TASK)
    subscription.offer(batch((1, 1), (1, 2)))
    subscription.offer(batch())  # nothing to deliver: not queued
    subscription.offer(batch((2, 1)))
    got = await asyncio.wait_for(subscription.batches(), 1)
    assert got is not None
    assert [[e.position for e in b.events] for b in got] == [[(1, 1), (1, 2)], [(2, 1)]]
    # Read, so its three places are free again.
    subscription.offer(batch((3, 1), (3, 2), (3, 3)))
    assert subscription.ended is None
    assert sample(metrics, "taskflow_event_stream_subscribers_dropped_total") == 0


async def test_a_subscription_that_would_hold_too_many_events_ends_as_lagging() -> None:
    metrics = Metrics()
    events = bus(metrics)
    subscription = await events.subscribe(task_id=TASK)
    subscription.offer(batch((1, 1), (1, 2)))
    subscription.offer(batch((2, 1), (2, 2)))  # four would be queued: more than 3

    assert subscription.ended == "lagging"
    assert events.subscribers == 0
    assert sample(metrics, "taskflow_event_stream_subscribers_dropped_total") == 1
    assert await asyncio.wait_for(subscription.batches(), 1) is None  # what it held is freed


async def test_a_closed_subscription_is_forgotten_and_a_closed_bus_takes_no_more() -> None:
    events = bus()
    first = await events.subscribe(task_id=TASK)
    second = await events.subscribe(task_id=TASK)
    assert events.subscribers == 2
    first.close()
    first.close()  # idempotent
    assert (first.ended, events.subscribers) == ("closed", 1)
    assert await asyncio.wait_for(first.batches(), 1) is None

    events.close()
    assert (second.ended, events.subscribers) == ("shutdown", 0)
    assert await asyncio.wait_for(second.batches(), 1) is None
    with pytest.raises(Overloaded):
        await events.subscribe(task_id=TASK)


class Horizon:
    """Stands in for the store's `stream_events` (the horizon at `xid`, and `pages`) and
    `task_events_since` (`task_pages`, each ask recorded)."""

    def __init__(self, xid: int) -> None:
        self.xid = xid
        self.reads = 0
        self.asked: list[tuple[int, int]] = []  # the position of each read
        self.pages: list[list[StreamEvent]] = []  # the events of the next reads
        self.task_pages: list[list[StreamEvent]] = []
        self.task_asks: list[dict[uuid.UUID, int]] = []

    async def stream_events(self, position: tuple[int, int], limit: int) -> SimpleNamespace:
        self.reads += 1
        self.asked.append(position)
        found = self.pages.pop(0) if self.pages and limit else []
        return SimpleNamespace(events=found, horizon=self.xid, next_xid=self.xid)

    async def task_events_since(self, ids: list[uuid.UUID], seqs: list[int]) -> list[StreamEvent]:
        self.task_asks.append(dict(zip(ids, seqs, strict=True)))
        return self.task_pages.pop(0) if self.task_pages else []


async def test_global_subscriptions_start_at_the_bus_position_read_once_while_any_is_open() -> None:
    store = Horizon(40)
    events = bus(store=store)
    first = await events.subscribe()
    assert first.start == (40, 0)  # the present: what was committed before is not sent
    store.xid = 45
    second = await events.subscribe()
    assert second.start == (40, 0)  # the shared position, not read again
    assert (store.reads, events.subscribers) == (1, 2)

    first.close()
    again = await events.subscribe()  # the second still listens: the position is kept
    assert (again.start, store.reads) == ((40, 0), 1)
    again.close()
    second.close()
    assert events.subscribers == 0
    third = await events.subscribe()  # nobody listened in between: the present again
    assert third.start == (45, 0)
    assert store.reads == 2


class Notifications:
    """Stands in for the LISTEN connection: `notify()` calls what the bus subscribed."""

    def __init__(self) -> None:
        self.subscribers: list[Callable[[str | None], None]] = []

    def subscribe(
        self, channel: str, subscriber: Callable[[str | None], None]
    ) -> Callable[[], None]:
        self.subscribers.append(subscriber)
        return lambda: self.subscribers.remove(subscriber)

    def notify(self, payload: str | None) -> None:
        for subscriber in self.subscribers:
            subscriber(payload)


class Failing(Horizon):
    """Reads the horizon, then fails the way a bug would (not a database error) `times`
    times, then reads `pages` as `Horizon` does."""

    def __init__(self, xid: int, times: int) -> None:
        super().__init__(xid)
        self.times = times

    async def stream_events(self, position: tuple[int, int], limit: int) -> SimpleNamespace:
        if limit and self.times:
            self.times -= 1
            raise RuntimeError("a bug in the reader")
        return await super().stream_events(position, limit)


async def test_each_notification_wakes_the_reader_whatever_its_payload() -> None:
    store, listener = Horizon(40), Notifications()
    events = bus(store=store, listener=listener)
    events.start()
    try:
        await events.subscribe()
        await eventually(lambda: store.reads == 2)  # the horizon, then a first read
        for n, payload in enumerate(['{"xid": 41}', "not json", None], start=3):
            listener.notify(payload)  # None: the listener reconnected, something may be missed
            await eventually(lambda n=n: store.reads == n, timeout=5)  # type: ignore[misc]
    finally:
        await events.stop()
    assert listener.subscribers == []


async def test_a_read_that_hits_a_bug_restarts_the_bus_and_ends_every_stream() -> None:
    store, listener, metrics = Failing(40, times=1), Notifications(), Metrics()
    events = bus(metrics, store=store, listener=listener)
    events.start()
    try:
        first = await events.subscribe()
        watching = await events.subscribe(task_id=TASK, after_seq=2)
        # What the bus held may be wrong after a bug: each stream ends (its client resumes
        # with Last-Event-ID), rather than going silent or being fed from a bad position.
        assert await asyncio.wait_for(first.batches(), 5) is None
        assert (first.ended, watching.ended) == ("restart", "restart")
        assert events.subscribers == 0
        assert sample(metrics, "taskflow_event_bus_restarts_total") == 1

        store.xid = 42
        store.pages = [[event(42, 1)]]
        again = await events.subscribe()  # still taken: the bus reads again
        assert again.start == (42, 0), "the position is read afresh, not kept from before"
        got = await asyncio.wait_for(again.batches(), 5)
        assert got is not None
        assert [e.position for b in got for e in b.events] == [(42, 1)]
    finally:
        await events.stop()


async def test_a_reader_that_dies_ends_every_stream_instead_of_leaving_them_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = bus(store=Failing(40, times=1), listener=Notifications())

    def broken() -> None:
        raise RuntimeError("a bug in the restart")

    monkeypatch.setattr(events, "_restart", broken)
    events.start()
    subscription = await events.subscribe()
    assert await asyncio.wait_for(subscription.batches(), 5) is None
    assert subscription.ended == "shutdown"
    with pytest.raises(Overloaded):
        await events.subscribe()
    await events.stop()  # its error was logged when it died: the service's stop goes on


async def test_the_bus_reads_on_from_the_last_event_it_fanned_out() -> None:
    store, listener = Horizon(40), Notifications()
    store.pages = [[event(40, 1), event(40, 2)], [event(41, 1)]]
    events = bus(store=store, listener=listener)
    events.start()
    subscription = await events.subscribe()
    got = await asyncio.wait_for(subscription.batches(), 5)
    listener.notify('{"xid": 41}')
    more = await asyncio.wait_for(subscription.batches(), 5)
    await events.stop()

    assert got is not None
    assert more is not None
    assert [e.position for b in [*got, *more] for e in b.events] == [(40, 1), (40, 2), (41, 1)]
    assert store.asked == [(0, 0), (40, 0), (40, 2)]  # the horizon, then after each read


async def test_a_task_stream_is_read_on_from_the_last_seq_of_its_task() -> None:
    store, listener = Horizon(40), Notifications()
    store.task_pages = [[event(40, 1), event(40, 2)], [event(41, 3)]]
    events = bus(store=store, listener=listener)
    events.start()
    try:
        watching = await events.subscribe(task_id=TASK, after_seq=0)
        got = await asyncio.wait_for(watching.batches(), 5)
        listener.notify('{"xid": 41}')
        more = await asyncio.wait_for(watching.batches(), 5)
        listener.notify('{"xid": 42}')
        await eventually(lambda: len(store.task_asks) == 3)
        watching.close()
        await events.subscribe()  # a global stream: the bus reads on, for it alone
        await eventually(lambda: store.reads == 2)  # its horizon, then a read
    finally:
        await events.stop()

    assert got is not None
    assert more is not None
    assert [e.event.seq for b in [*got, *more] for e in b.events] == [1, 2, 3]
    assert store.task_asks[:3] == [{TASK: 0}, {TASK: 2}, {TASK: 3}], "each after the last"
    assert len(store.task_asks) == 3, "a task nobody watches any more is not read"
