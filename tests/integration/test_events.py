"""Live events in one process: the task stream and the global stream, their cursors."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp_sse import EventSourceResponse
from structlog.testing import capture_logs

from taskflow.config import Settings
from taskflow.db.component import STORE
from taskflow.events import streams
from taskflow.events.bus import EVENT_BUS, Subscription
from taskflow.events.messages import encode_cursor
from taskflow.models import StreamEvent
from taskflow.watch import SseMessage
from taskflow_bench.harness.metrics import label_values, metric, scrape, value
from tests.conftest import ADMIN_URL
from tests.integration.sse import (
    data,
    first_line,
    flood,
    non_reading_client,
    read_messages,
    stream_headers,
)
from tests.unit.helpers import eventually

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[Settings], Awaitable[Client]]


async def _create(client: Client, title: str = "t") -> str:
    response = await client.post("/tasks", json={"title": title})
    assert response.status == 201
    task_id: str = (await response.json())["id"]
    return task_id


async def _wait_status(client: Client, task_id: str, status: str) -> None:
    async with asyncio.timeout(20):
        while True:
            if (await (await client.get(f"/tasks/{task_id}")).json())["status"] == status:
                return
            await asyncio.sleep(0.02)


async def test_task_stream_replays_history_then_live_events_then_ends(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(replace(settings, work_min_s=1.0, work_max_s=1.0))
    task_id = await _create(client)
    await _wait_status(client, task_id, "in_progress")

    response = await client.get(f"/tasks/{task_id}/events", headers=stream_headers())
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert await first_line(response) == b"retry: 1000\n"
    messages = await read_messages(response)  # until the server ends the stream

    assert [(m.id, m.event) for m in messages] == [(str(n), "status") for n in (1, 2, 3)]
    items = [data(m) for m in messages]
    assert [i["status"] for i in items] == ["new", "in_progress", "completed"]
    assert {i["task_id"] for i in items} == {task_id}
    history = (await (await client.get(f"/tasks/{task_id}/events")).json())["items"]
    assert [{k: v for k, v in i.items() if k != "task_id"} for i in items] == history


async def test_task_stream_resumes_after_last_event_id_and_says_204_when_done(
    client: Client,
) -> None:
    task_id = await _create(client)
    await _wait_status(client, task_id, "completed")
    path = f"/tasks/{task_id}/events"

    response = await client.get(path, headers=stream_headers("1"))
    assert [m.id for m in await read_messages(response)] == ["2", "3"]
    response = await client.get(path, headers=stream_headers("2"))
    assert [data(m)["status"] for m in await read_messages(response)] == ["completed"]
    for seen in ("3", "17"):
        response = await client.get(path, headers=stream_headers(seen))
        assert response.status == 204
    # Without the Accept header the route answers JSON, as ever.
    response = await client.get(path, headers={"Last-Event-ID": "2"})
    assert len((await response.json())["items"]) == 3


async def test_an_event_both_in_a_task_streams_history_and_live_is_sent_once(
    make_client: MakeClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One processor, busy for a second with another task: the watched task is `new`
    # when its stream starts, and starts while the stream reads its history.
    client = await make_client(replace(settings, processors=1, work_min_s=1.0, work_max_s=1.0))
    await _create(client, "ahead")
    task_id = await _create(client, "watched")
    bus, store = client.app[EVENT_BUS], client.app[STORE]
    subscriptions: list[Subscription] = []
    subscribe, history = bus.subscribe, store.task_events_after

    async def subscribing(**kwargs: Any) -> Subscription:
        subscriptions.append(await subscribe(**kwargs))
        return subscriptions[-1]

    async def late_history(task: uuid.UUID, seq: int) -> list[StreamEvent]:
        # Read the history only once the live `in_progress` is queued for the stream:
        # the history then has it too.
        await eventually(lambda: subscriptions[0]._queued > 0, timeout=10)
        return await history(task, seq)

    monkeypatch.setattr(bus, "subscribe", subscribing)
    monkeypatch.setattr(store, "task_events_after", late_history)
    response = await client.get(f"/tasks/{task_id}/events", headers=stream_headers())
    messages = await read_messages(response)

    assert [(m.id, data(m)["status"]) for m in messages] == [
        ("1", "new"),
        ("2", "in_progress"),
        ("3", "completed"),
    ]


@pytest.mark.parametrize(
    "value",
    ["garbage", "-1", "1.5", "99999999999999999999", "2147483648", "AAAAAAAAAAAAAAAAAAAAAA", "٣"],
)
async def test_bad_last_event_ids_of_a_task_stream_are_400(
    make_client: MakeClient, settings: Settings, value: str
) -> None:
    client = await make_client(replace(settings, work_min_s=30.0, work_max_s=30.0))
    task_id = await _create(client)
    response = await client.get(f"/tasks/{task_id}/events", headers=stream_headers(value))
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "bad_request"
    assert "Last-Event-ID" in error["details"]


async def test_a_seq_past_the_last_event_of_a_running_task_is_400(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(replace(settings, work_min_s=30.0, work_max_s=30.0))
    task_id = await _create(client)
    await _wait_status(client, task_id, "in_progress")
    response = await client.get(f"/tasks/{task_id}/events", headers=stream_headers("3"))
    assert response.status == 400


async def test_task_stream_of_an_unknown_task_is_404(client: Client) -> None:
    response = await client.get(f"/tasks/{uuid.uuid4()}/events", headers=stream_headers())
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "-1",
        "1",
        "AAAAAAAAAAAAAAAAAAAAAA==",
        "_____________________w",
        "٣" * 22,
        encode_cursor((2**40, 0)),  # a transaction far in the future, its first event
    ],
)
async def test_bad_cursors_of_the_global_stream_are_400(client: Client, value: str) -> None:
    response = await client.get("/events", headers=stream_headers(value))
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "bad_request"
    assert "Last-Event-ID" in error["details"]


async def test_bad_filters_of_the_global_stream_are_400(client: Client) -> None:
    for query in ("status=done", "task_id=nope"):
        response = await client.get(f"/events?{query}", headers=stream_headers())
        assert response.status == 400, query


async def _insert(conn: asyncpg.Connection, title: str) -> str:
    task_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO tasks (id, title, source) VALUES ($1, $2, 'http')", task_id, title
    )
    return str(task_id)


async def test_global_stream_is_exact_under_transactions_committing_out_of_order(
    client: Client, db_url: str
) -> None:
    response = await client.get("/events", headers=stream_headers())
    assert response.status == 200
    await first_line(response)  # subscribed: the stream starts here

    a, b = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    try:
        tx_a, tx_b = a.transaction(), b.transaction()
        await tx_a.start()
        await tx_b.start()
        task_a = await _insert(a, "a")  # the lower event id and the lower xid
        task_b = await _insert(b, "b")
        await tx_b.commit()  # B commits first and is processed while A is still open:
        # its NOTIFY wakes the bus, which reads within milliseconds; without this pause the
        # read could come after A's commit too, and a reader that skips A would pass.
        await asyncio.sleep(0.5)
        await tx_a.commit()
    finally:
        await a.close()
        await b.close()

    messages = await read_messages(response, count=6)
    response.close()
    items = [data(m) for m in messages]
    assert Counter(i["task_id"] for i in items) == {task_a: 3, task_b: 3}
    for task in (task_a, task_b):
        assert [i["seq"] for i in items if i["task_id"] == task] == [1, 2, 3]
    # A began first: its event stands first, although B committed (and was even processed)
    # before A ended. A reader of "id > last seen" would have skipped it.
    assert (items[0]["task_id"], items[0]["status"]) == (task_a, "new")
    ids = [m.id for m in messages]
    assert len(set(ids)) == 6

    # Resuming after each message gives exactly the rest, in the same order.
    for n, seen in enumerate(ids):
        resumed = await client.get("/events", headers=stream_headers(seen))
        assert resumed.status == 200
        rest = await read_messages(resumed, count=5 - n, timeout=20) if n < 5 else []
        resumed.close()
        assert [m.id for m in rest] == ids[n + 1 :]


async def _resumed(client: Client, path: str, last_event_id: str, count: int) -> list[SseMessage]:
    """`count` messages of `path` resumed after `last_event_id`; the stream is closed."""
    response = await client.get(path, headers=stream_headers(last_event_id))
    messages = await read_messages(response, count=count)
    response.close()
    return messages


async def _start_of_global_stream(client: Client, query: str = "") -> str:
    """The position a global stream with `query` starts at: its first message, an `id`
    with no data (a position, not an event). The stream is then lost, before any change."""
    response = await client.get(f"/events?{query}", headers=stream_headers())
    assert await first_line(response) == b"retry: 1000\n"
    async with asyncio.timeout(10):
        lines = [await response.content.readline() for _ in range(3)]
    response.close()
    assert lines[0] == b"\n"
    assert lines[1].startswith(b"id: ")
    assert lines[2] == b"\n"
    return lines[1].removeprefix(b"id: ").strip().decode()


async def test_a_filtered_global_stream_replays_only_what_its_filter_takes(
    client: Client,
) -> None:
    start = await _start_of_global_stream(client, "status=new")
    # One after the other: every change of the first commits before the second exists.
    first = await _create(client, "first")
    await _wait_status(client, first, "completed")
    second = await _create(client, "second")
    await _wait_status(client, second, "completed")

    # Resumed while every change is already in the table: the replay, not the live feed.
    messages = await _resumed(client, "/events?status=new", start, count=2)
    assert [(data(m)["task_id"], data(m)["status"]) for m in messages] == [
        (first, "new"),
        (second, "new"),
    ]

    messages = await _resumed(client, f"/events?task_id={second}", start, count=3)
    assert [(data(m)["task_id"], data(m)["seq"]) for m in messages] == [
        (second, 1),
        (second, 2),
        (second, 3),
    ]


async def test_global_stream_gives_its_start_as_an_id_so_a_client_lost_before_any_change_resumes(
    client: Client,
) -> None:
    start = await _start_of_global_stream(client)  # lost before any change

    task_id = await _create(client)  # changes made while the client is away
    await _wait_status(client, task_id, "completed")
    messages = await _resumed(client, "/events", start, count=3)
    assert [(data(m)["task_id"], data(m)["seq"]) for m in messages] == [
        (task_id, 1),
        (task_id, 2),
        (task_id, 3),
    ]


async def test_global_stream_filters_by_status_and_task(client: Client) -> None:
    done = await client.get("/events?status=completed", headers=stream_headers())
    everything = await client.get("/events", headers=stream_headers())
    await first_line(done)
    await first_line(everything)
    first, second = await _create(client, "first"), await _create(client, "second")
    completed = await read_messages(done, count=2)
    done.close()
    assert {data(m)["task_id"] for m in completed} == {first, second}
    assert {data(m)["status"] for m in completed} == {"completed"}

    all_six = await read_messages(everything, count=6)
    everything.close()
    # Resumed from the first message, filtered to one task: that task's remaining changes.
    one = await client.get(f"/events?task_id={second}", headers=stream_headers(all_six[0].id))
    expected = [m.id for m in all_six[1:] if data(m)["task_id"] == second]
    assert [m.id for m in await read_messages(one, count=len(expected))] == expected
    one.close()


async def test_a_transaction_in_another_database_does_not_hold_the_stream_back(
    client: Client,
) -> None:
    response = await client.get("/events", headers=stream_headers())
    await first_line(response)
    elsewhere = await asyncpg.connect(ADMIN_URL)  # another database of the same server
    try:
        async with elsewhere.transaction():
            await elsewhere.fetchval("SELECT pg_current_xact_id()")  # holds an xid open
            task_id = await _create(client)
            # Delivered while that transaction is still open: it cannot write our tables.
            messages = await read_messages(response, count=3)
    finally:
        await elsewhere.close()
    response.close()
    assert {data(m)["task_id"] for m in messages} == {task_id}


async def test_stream_metrics(client: Client) -> None:
    response = await client.get("/events", headers=stream_headers())
    await first_line(response)
    await _create(client)
    await read_messages(response, count=3)
    text = await (await client.get("/metrics")).text()
    response.close()
    assert 'taskflow_event_streams_open{stream="global"} 1.0' in text
    assert 'taskflow_event_stream_events_sent_total{stream="global"} 3.0' in text
    assert "taskflow_event_stream_subscribers_dropped_total 0.0" in text
    assert "taskflow_notification_queue_usage 0.0" in text
    assert "taskflow_event_listener_reconnects 0.0" in text


async def test_a_bug_in_the_bus_ends_the_streams_and_a_resumed_one_misses_nothing(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = await client.get("/events", headers=stream_headers())
    await first_line(response)
    first = await _create(client, "before")
    seen = await read_messages(response, count=3)
    assert {data(m)["task_id"] for m in seen} == {first}
    last = seen[-1].id
    assert last is not None

    store = client.app[EVENT_BUS]._store  # the bus's next read hits a bug, once
    real = store.stream_events
    bugs = [RuntimeError("a bug in the bus")]

    async def buggy(*args: Any, **kwargs: Any) -> Any:
        if bugs:
            raise bugs.pop()
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "stream_events", buggy)
    second = await _create(client, "during")
    assert await read_messages(response) == [], "the stream ends, with nothing more sent"
    await _wait_status(client, second, "completed")

    messages = await _resumed(client, "/events", last, count=3)
    assert [(data(m)["task_id"], data(m)["seq"]) for m in messages] == [
        (second, n) for n in (1, 2, 3)
    ]
    text = await (await client.get("/metrics")).text()
    assert "taskflow_event_bus_restarts_total 1.0" in text
    live = await client.get("/events", headers=stream_headers())
    assert live.status == 200, "the bus takes new streams again"
    live.close()


async def test_a_resumed_stream_pages_through_its_replay_then_goes_live_exactly_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "REPLAY_BATCH", 4)  # a replay of 9 events takes 3 pages
    start = await _start_of_global_stream(client)
    away = [await _create(client, f"away {n}") for n in range(3)]
    for task_id in away:
        await _wait_status(client, task_id, "completed")

    response = await client.get("/events", headers=stream_headers(start))
    replayed = await read_messages(response, count=9)
    live_one = await _create(client, "live")  # created once the replay is sent
    live = await read_messages(response, count=3)
    response.close()

    assert sorted((data(m)["task_id"], data(m)["seq"]) for m in replayed) == sorted(
        (task_id, n) for task_id in away for n in (1, 2, 3)
    )
    assert [(data(m)["task_id"], data(m)["seq"]) for m in live] == [
        (live_one, n) for n in (1, 2, 3)
    ]
    ids = [m.id for m in [*replayed, *live]]
    assert len(set(ids)) == 12, "every change exactly once"


async def test_a_stream_of_one_task_gets_only_that_task_live(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(replace(settings, work_min_s=60.0, work_max_s=60.0))
    watched = await _create(client, "watched")
    await _wait_status(client, watched, "in_progress")
    response = await client.get(f"/events?task_id={watched}", headers=stream_headers())
    await first_line(response)
    other = await _create(client, "other")  # its changes are not for this stream
    await _wait_status(client, other, "in_progress")
    cancel = await client.post(f"/tasks/{watched}/cancel", json={})
    assert cancel.status == 202

    [message] = await read_messages(response, count=1)
    response.close()
    assert (data(message)["task_id"], data(message)["status"]) == (watched, "cancelled")


@pytest.mark.parametrize("path", ["/events", "/tasks/{id}/events"])
async def test_a_client_that_leaves_a_quiet_stream_is_let_go(
    make_client: MakeClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setattr(streams, "PING_INTERVAL_S", 0.2)  # how soon a write finds it gone
    client = await make_client(replace(settings, work_min_s=60.0, work_max_s=60.0))
    task_id = await _create(client)  # running for a minute: nothing happens meanwhile
    await _wait_status(client, task_id, "in_progress")
    response = await client.get(path.format(id=task_id), headers=stream_headers())
    await first_line(response)
    bus = client.app[EVENT_BUS]
    assert bus.subscribers == 1
    response.close()

    await eventually(lambda: bus.subscribers == 0)  # the handler ended, then unsubscribed
    assert await _no_stream_open(client)


async def test_a_client_that_stops_reading_is_cut_off_within_the_send_timeout(
    client: Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiohttp-sse also sets the socket's TCP_USER_TIMEOUT to the send timeout, so the
    # kernel may end the connection before a write times out: either way, it ends.
    monkeypatch.setattr(streams, "SEND_TIMEOUT_S", 0.5)
    sock = await _flood_a_non_reading_client(client, db_url)
    try:  # within 5 s: the keep-alive alone would take 10 s to notice
        await eventually(lambda: client.app[EVENT_BUS].subscribers == 0, timeout=5)
        dropped = await metric(client, "taskflow_event_stream_subscribers_dropped_total")
        assert dropped == 0, "not as lagging"
        assert await _no_stream_open(client)
    finally:
        sock.close()


async def test_a_stalled_write_is_aborted_without_the_kernels_timeout(
    client: Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where the socket has no TCP_USER_TIMEOUT (not Linux, or aiohttp-sse not setting
    # it), the stream's own write deadline is what ends it: the connection is aborted,
    # not left waiting for a client that may never read what is buffered for it. The
    # server's send buffer is kept small, so that the flood fills it.
    def small_send_buffer(_response: object, request: web.BaseRequest) -> None:
        assert request.transport is not None
        sock = request.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    monkeypatch.setattr(EventSourceResponse, "_set_tcp_user_timeout", small_send_buffer)
    monkeypatch.setattr(streams, "SEND_TIMEOUT_S", 0.5)
    assert client.server.runner is not None
    server = client.server.runner.server  # aiohttp's: the connections it holds open
    assert server is not None
    with capture_logs() as logs:
        sock = await _flood_a_non_reading_client(client, db_url)
        try:
            await eventually(lambda: client.app[EVENT_BUS].subscribers == 0, timeout=5)
            stalled = {"event": "events.client_stalled", "stream": "global", "log_level": "warning"}
            assert stalled in logs
            # Cut off: the service does not hold the connection open, with what it could
            # not send, waiting for a client that may never read.
            await eventually(lambda: not server.connections, timeout=5)
            assert await _no_stream_open(client)
        finally:
            sock.close()


async def _flood_a_non_reading_client(client: Client, db_url: str) -> socket.socket:
    """A client on `GET /events` that never reads, and enough events for it (up to 9,000:
    fewer than a stream's queue holds, more than the sockets' buffers) to stall a write."""
    assert client.port is not None
    sock = await non_reading_client(client.port)
    try:
        await eventually(lambda: client.app[EVENT_BUS].subscribers == 1)
        await flood(db_url, 3000)
    except BaseException:
        sock.close()
        raise
    return sock


async def _no_stream_open(client: Client) -> bool:
    """True when `taskflow_event_streams_open` is 0 for every kind of stream."""
    samples = await scrape(client)
    kinds = label_values(samples, "taskflow_event_streams_open", "stream")
    return all(value(samples, "taskflow_event_streams_open", stream=k) == 0 for k in kinds)


async def test_a_long_transaction_holds_the_global_stream_back_but_not_a_task_stream(
    make_client: MakeClient, settings: Settings, db_url: str
) -> None:
    client = await make_client(replace(settings, work_min_s=0.5, work_max_s=0.5))
    everything = await client.get("/events", headers=stream_headers())
    await first_line(everything)
    long = await asyncpg.connect(db_url)
    try:
        async with long.transaction():
            await long.fetchval("SELECT pg_current_xact_id()")  # an open xid in our database
            task_id = await _create(client)
            one = await client.get(f"/tasks/{task_id}/events", headers=stream_headers())
            task_messages = await read_messages(one)  # to its end, while the xid is open
        # Only now, with that transaction ended, can the global stream pass its xid.
        global_messages = await read_messages(everything, count=3)
    finally:
        await long.close()
    everything.close()
    assert [data(m)["status"] for m in task_messages] == ["new", "in_progress", "completed"]
    assert [data(m)["seq"] for m in global_messages] == [1, 2, 3]
