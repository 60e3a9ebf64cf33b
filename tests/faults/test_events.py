"""Live events across real `taskflow serve` processes: instances, restarts, a lost LISTEN
connection, a client that stops reading, SIGTERM, and `taskflow watch`."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from signal import SIGTERM

import aiohttp
import asyncpg
import orjson

from taskflow.watch import SseMessage
from taskflow_bench.harness.metrics import value
from taskflow_bench.harness.service import Service
from tests.faults.conftest import Fleet
from tests.faults.tasks import create_tasks
from tests.integration.sse import (
    data,
    first_line,
    flood,
    non_reading_client,
    read_messages,
    stream_headers,
)
from tests.integration.support import run_command, wait_until

FAST = {"work_min_s": 0.0, "work_max_s": 0.0, "failure_rate": 0.0, "processors": 10}


async def _open(
    session: aiohttp.ClientSession, url: str, last: str | None = None
) -> aiohttp.ClientResponse:
    response = await session.get(url, headers=stream_headers(last))
    assert response.status == 200, await response.text()
    await first_line(response)  # `retry:`: subscribed, the stream has begun
    return response


def _per_task(messages: list[SseMessage]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = {}
    for message in messages:
        item = data(message)
        seqs.setdefault(item["task_id"], []).append(item["seq"])
    return seqs


async def test_changes_made_on_one_instance_reach_streams_on_another(fleet: Fleet) -> None:
    a = await fleet.start("a", **FAST)
    b = await fleet.start("b", **FAST)
    everything = await _open(fleet.session, f"{a.url}/events")
    ids = [str(i) for i in await create_tasks(fleet.session, b.url, 20, 5)]
    messages = await read_messages(everything, count=60, timeout=30)
    everything.close()
    assert _per_task(messages) == {i: [1, 2, 3] for i in ids}

    # A task's stream on A, resumed after its first event, of a task B made and ran.
    response = await fleet.session.get(
        f"{a.url}/tasks/{ids[0]}/events", headers=stream_headers("1")
    )
    assert [data(m)["status"] for m in await read_messages(response)] == [
        "in_progress",
        "completed",
    ]


async def test_a_stream_resumes_exactly_across_a_restart_of_its_instance(fleet: Fleet) -> None:
    a = await fleet.start("a", **FAST)
    b = await fleet.start("b", **FAST)
    stream = await _open(fleet.session, f"{a.url}/events")
    first = [str(i) for i in await create_tasks(fleet.session, b.url, 10, 5)]
    seen = await read_messages(stream, count=30, timeout=30)
    stream.close()
    assert await a.stop() == 0

    # While A is down, B goes on; then a new A (another process) serves the resumed stream.
    later = [str(i) for i in await create_tasks(fleet.session, b.url, 10, 5)]
    a2 = await fleet.start("a2", **FAST)
    resumed = await _open(fleet.session, f"{a2.url}/events", seen[-1].id)
    rest = await read_messages(resumed, count=30, timeout=30)
    resumed.close()
    assert _per_task(seen) == {i: [1, 2, 3] for i in first}
    assert _per_task(rest) == {i: [1, 2, 3] for i in later}
    assert not {m.id for m in seen} & {m.id for m in rest}


async def test_no_event_is_lost_when_the_listen_connection_is_killed(fleet: Fleet) -> None:
    a = await fleet.start("a", **FAST)
    b = await fleet.start("b", **FAST)
    stream = await _open(fleet.session, f"{a.url}/events")
    conn = await asyncpg.connect(fleet.db_url)
    try:
        killed = await conn.fetch(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()
                 AND (query LIKE 'LISTEN%' OR query LIKE '%pg_notification_queue_usage%')"""
        )
        assert len(killed) == 2  # one LISTEN connection per instance
    finally:
        await conn.close()
    # Made at once, while A may not listen yet: its notifications can be lost.
    ids = [str(i) for i in await create_tasks(fleet.session, b.url, 20, 5)]
    messages = await read_messages(stream, count=60, timeout=30)
    stream.close()
    assert _per_task(messages) == {i: [1, 2, 3] for i in ids}
    await a.wait_log("listener.reconnecting", timeout=10)


async def test_a_client_that_stops_reading_is_dropped_and_memory_stays_bounded(
    fleet: Fleet,
) -> None:
    a = await fleet.start("a", **FAST)
    sock = await non_reading_client(a.port)
    try:
        async with asyncio.timeout(10):
            await _wait_open_streams(a, 1)
        before = a.rss_bytes()
        # 20,000 tasks at once, 60,000 events, far more than the stream's queue holds.
        await flood(fleet.db_url, 20000)
        async with asyncio.timeout(60):
            await _wait_open_streams(a, 0)
        grown = a.rss_bytes() - before
        samples = await a.metrics()
        dropped = value(samples, "taskflow_event_stream_subscribers_dropped_total")
        assert dropped == 1 or any(e for e in a.events("events.client_stalled"))
        assert grown < 64 * 1024 * 1024, grown
    finally:
        sock.close()


async def _wait_open_streams(service: Service, count: int) -> None:
    """Wait until `service` has `count` global streams open."""
    while True:
        samples = await service.metrics()
        if value(samples, "taskflow_event_streams_open", stream="global") == count:
            return
        await asyncio.sleep(0.1)


async def test_sigterm_closes_open_streams_promptly(fleet: Fleet) -> None:
    a = await fleet.start("a", shutdown_grace_s=60, **FAST)
    body = await _create(fleet.session, a.url)
    task_stream = await fleet.session.get(
        f"{a.url}/tasks/{body['id']}/events", headers=stream_headers("3")
    )
    assert task_stream.status == 204  # done already; a global stream stays open:
    streams = [await _open(fleet.session, f"{a.url}/events") for _ in range(3)]
    a.signal(SIGTERM)
    async with asyncio.timeout(15):  # well inside the 60 s grace aiohttp would wait
        for stream in streams:
            async for chunk in stream.content.iter_any():
                # Nothing happened (at most the stream's starting position): it just ends.
                assert b"data:" not in chunk
        assert await a.wait_exit() == 0


async def _create(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """Create a task and wait until it is finished."""
    async with session.post(f"{url}/tasks", json={"title": "t"}) as response:
        body: dict[str, str] = await response.json()
    task_id = body["id"]
    async with asyncio.timeout(30):
        while True:
            async with session.get(f"{url}/tasks/{task_id}") as response:
                if (await response.json())["status"] in ("completed", "failed"):
                    return body
            await asyncio.sleep(0.05)


async def _watch(url: str, task_id: str) -> tuple[int, str, str]:
    return await run_command(
        sys.executable, "-m", "taskflow", "watch", task_id, "--url", url, timeout=60
    )


async def test_taskflow_watch_exit_codes(fleet: Fleet) -> None:
    ok = await fleet.start("ok", work_min_s=1.0, work_max_s=1.0, failure_rate=0.0)
    async with fleet.session.post(f"{ok.url}/tasks", json={"title": "w"}) as response:
        good_id = (await response.json())["id"]
    code, out, err = await _watch(ok.url, good_id)
    assert code == 0, err
    assert [line for line in out.splitlines() if '"completed"' in line]
    assert "new" in out

    await ok.stop()  # only `bad` takes tasks from now on
    bad = await fleet.start("bad", work_min_s=1.0, work_max_s=1.0, failure_rate=1.0)
    async with fleet.session.post(f"{bad.url}/tasks", json={"title": "w"}) as response:
        failing_id = (await response.json())["id"]
    code, out, err = await _watch(bad.url, failing_id)
    assert code == 1, err
    assert '"failed"' in out.splitlines()[-1]

    code, _, err = await _watch(bad.url, str(uuid.uuid4()))
    assert code == 2
    assert "404" in err


async def test_taskflow_watch_of_a_retried_task_follows_it_to_its_last_outcome(
    fleet: Fleet,
) -> None:
    # The history of a retried task holds a terminal event that is not its last: watch
    # printed up to the cancel and exited 1, while the retried attempt went on to complete.
    service = await fleet.start("r", work_min_s=2.0, work_max_s=2.0, failure_rate=0.0)
    async with fleet.session.post(f"{service.url}/tasks", json={"title": "w"}) as response:
        task_id = (await response.json())["id"]
    task_url = f"{service.url}/tasks/{task_id}"

    async def status() -> str:
        async with fleet.session.get(task_url) as response:
            return str((await response.json())["status"])

    await wait_until(lambda: _is(status, "in_progress"))
    async with fleet.session.post(f"{task_url}/cancel") as response:
        assert response.status == 202, await response.text()
    await wait_until(lambda: _is(status, "cancelled"))
    async with fleet.session.post(f"{task_url}/retry") as response:
        assert response.status == 200, await response.text()

    code, out, err = await _watch(service.url, task_id)  # live, from the retry on
    assert code == 0, err
    printed = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(item["seq"], item["status"]) for item in printed] == [
        (1, "new"),
        (2, "in_progress"),
        (3, "cancelled"),
        (4, "new"),
        (5, "in_progress"),
        (6, "completed"),
    ]
    code, again, err = await _watch(service.url, task_id)  # all of it replayed, then 204
    assert (code, again) == (0, out), err


async def _is(read: Callable[[], Awaitable[str]], expected: str) -> bool:
    return await read() == expected


async def test_taskflow_watch_resumes_after_a_dropped_connection(fleet: Fleet) -> None:
    a = await fleet.start("a", work_min_s=4.0, work_max_s=4.0, failure_rate=0.0)
    b = await fleet.start("b", work_min_s=4.0, work_max_s=4.0, failure_rate=0.0)
    async with fleet.session.post(f"{b.url}/tasks", json={"title": "w"}) as response:
        task_id = (await response.json())["id"]
    watcher = asyncio.create_task(_watch(a.url, task_id))
    await asyncio.sleep(1.0)
    await a.stop()  # watch loses its server mid-task; it resumes against a new one
    a2 = await fleet.launch("a2", port=a.port, work_min_s=4.0, work_max_s=4.0)
    await a2.wait_ready()
    code, out, err = await asyncio.wait_for(watcher, 60)
    assert code == 0, err
    printed = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    seqs = [item["seq"] for item in printed]
    assert seqs == list(range(1, len(seqs) + 1))  # each change printed once, none missed
    assert printed[-1]["status"] == "completed"
    assert "resuming" in err
