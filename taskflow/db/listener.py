"""The event listener: one LISTEN connection per process, its notifications fanned out in memory.

PostgreSQL delivers a NOTIFY after its transaction commits, on every channel this process
listens to, over one dedicated connection outside the pool (a pooled connection would
be reset, and PgBouncer's transaction mode drops LISTEN). Each notification's payload is
handed to the subscribers of its channel, in memory, in the order received.

Notifications sent while the connection is down are lost. So after every (re)connection
each subscriber is called with `None`: "you may have missed something, catch up from the
tables". The connection is watched two ways: asyncpg's termination callback, and a query
every `check_s` seconds (a connection whose server vanished without a FIN says nothing).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

import asyncpg
import structlog

from taskflow.backoff import Backoff
from taskflow.db.connector import CALL_TIMEOUT_S, UNREACHABLE, connect_once
from taskflow.errors import TaskflowError

log = structlog.get_logger(__name__)

# What a subscriber is given: a notification's payload, or None after a (re)connection.
Subscriber = Callable[[str | None], None]

EVENTS_CHANNEL = "taskflow_events"


class EventListener:
    """Listens on PostgreSQL channels and calls the subscribers of each, until cancelled.

    Subscribers must not block: they run on the connection's callback. A subscriber that
    raises is logged and kept.
    """

    def __init__(self, dsn: str, *, check_s: float = 10.0, timeout: float = CALL_TIMEOUT_S) -> None:
        self._dsn = dsn
        self._check_s = check_s
        self._timeout = timeout
        self._subscribers: defaultdict[str, list[Subscriber]] = defaultdict(list)
        self._conn: asyncpg.Connection | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        self.reconnects = 0
        # pg_notification_queue_usage() at the last check: 1.0 means NOTIFY blocks commits.
        self.queue_usage = 0.0

    def subscribe(self, channel: str, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` for each notification on `channel`; returns the unsubscribe."""
        self._subscribers[channel].append(subscriber)
        if self._conn is not None and len(self._subscribers[channel]) == 1:
            # A channel first asked for while connected: LISTEN now (a reconnection would too).
            task = asyncio.get_running_loop().create_task(
                self._listen(self._conn, channel), name=f"listen-{channel}"
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        def unsubscribe() -> None:
            if subscriber in self._subscribers[channel]:
                self._subscribers[channel].remove(subscriber)

        return unsubscribe

    def _deliver(self, channel: str, payload: str | None) -> None:
        for subscriber in list(self._subscribers.get(channel, ())):
            try:
                subscriber(payload)
            except Exception:  # a broken subscriber must not starve the others
                log.exception("listener.subscriber_failed", channel=channel)

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        self._deliver(channel, payload)

    async def _listen(self, conn: asyncpg.Connection, channel: str) -> None:
        try:
            await conn.add_listener(channel, self._on_notify)
        except (*UNREACHABLE, asyncpg.PostgresError) as exc:
            log.warning("listener.listen_failed", channel=channel, error=str(exc))

    async def run(self) -> None:
        """Stay connected and listening, reconnecting with backoff, until cancelled."""
        backoff = Backoff(first=0.5, cap=10.0)
        while True:
            try:
                conn = await connect_once(self._dsn, self._timeout)
            except TaskflowError as exc:
                delay = backoff.take()
                log.warning("listener.connect_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            try:
                await self._serve(conn)
            except (*UNREACHABLE, asyncpg.PostgresError) as exc:
                log.warning("listener.connection_lost", error=str(exc) or type(exc).__name__)
            finally:
                self._conn = None
                self.connected.clear()
                conn.terminate()
            self.reconnects += 1
            log.warning("listener.reconnecting", reconnects=self.reconnects)

    async def _serve(self, conn: asyncpg.Connection) -> None:
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: closed.set())
        for channel in list(self._subscribers):
            await conn.add_listener(channel, self._on_notify)
        self._conn = conn
        self.connected.set()
        log.info("listener.connected", channels=sorted(self._subscribers))
        for channel in list(self._subscribers):
            self._deliver(channel, None)
        while not closed.is_set():
            try:  # not wait_for, which on Python 3.11 can swallow a cancel
                async with asyncio.timeout(self._check_s):
                    await closed.wait()
            except TimeoutError:
                usage = await conn.fetchval(
                    "SELECT pg_notification_queue_usage()", timeout=self._timeout
                )
                self.queue_usage = float(usage)
        raise asyncpg.exceptions.ConnectionDoesNotExistError("the LISTEN connection was closed")
