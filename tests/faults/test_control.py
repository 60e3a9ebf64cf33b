"""Control over HTTP with real instances: cancel (also of an attempt running on another
instance), retry, bulk actions, bad bodies, and the ways a cancel can be missed (a lost
notification, a holder killed) or overtaken (the attempt finishing first)."""

from __future__ import annotations

import asyncio
import uuid
from signal import SIGKILL
from typing import Any

import aiohttp
import asyncpg
import orjson

from taskflow_bench.harness import events
from taskflow_bench.harness.metrics import value
from taskflow_bench.harness.service import Service
from tests.faults.conftest import Fleet
from tests.faults.tasks import create_one
from tests.integration.support import run_taskflow

FINISHED = ("completed", "failed", "cancelled")
STOPPING = "cancel requested: stopping the attempt"
TOO_LATE = "cancel too late: the attempt had finished, its outcome stands"
LAPSED = "lease expired with a cancel requested: task cancelled"


async def post(
    session: aiohttp.ClientSession, url: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    """POST (JSON `body`, or `raw` bytes as JSON, or nothing); status and decoded answer."""
    headers = {"Content-Type": "application/json"} if raw is not None else None
    async with session.post(url, json=body, data=raw, headers=headers) as response:
        return response.status, await response.json()


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def created(session: aiohttp.ClientSession, service: Service, title: str) -> str:
    status, body, _ = await create_one(session, service.url, title)
    assert status == 201, body
    return str(body["id"])


async def wait_status(
    session: aiohttp.ClientSession,
    service: Service,
    task_id: str,
    *statuses: str,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Poll the task (at most `timeout`) until its status is one of `statuses`."""
    async with asyncio.timeout(timeout):
        while True:
            task: dict[str, Any] = await get(session, f"{service.url}/tasks/{task_id}")
            if task["status"] in statuses:
                return task
            await asyncio.sleep(0.02)


async def history(session: aiohttp.ClientSession, service: Service, task_id: str) -> list[Any]:
    body = await get(session, f"{service.url}/tasks/{task_id}/events")
    items: list[Any] = body["items"]
    assert [e["seq"] for e in items] == list(range(1, len(items) + 1))
    return items


def changes(items: list[Any]) -> list[tuple[str, int]]:
    return [(e["status"], e["attempt"]) for e in items]


async def lease_owner(db_url: str, task_id: str) -> str | None:
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        owner: str | None = await conn.fetchval(
            "SELECT lease_owner FROM tasks WHERE id = $1", uuid.UUID(task_id)
        )
        return owner
    finally:
        await conn.close(timeout=10)


async def _finished_and_unknown_tasks_are_refused(s: aiohttp.ClientSession, web: Service) -> None:
    url = web.url
    # A completed task: cancel and retry are 409.
    finished = await created(s, web, "finished")
    assert (await wait_status(s, web, finished, *FINISHED))["status"] == "completed"
    for action in ("cancel", "retry"):
        status, error = await post(s, f"{url}/tasks/{finished}/{action}")
        assert status == 409, error
        assert error["error"]["details"] == {"status": "completed"}

    # Unknown and malformed ids: 404.
    for bad in (str(uuid.uuid4()), "not-a-uuid"):
        for action in ("cancel", "retry"):
            status, error = await post(s, f"{url}/tasks/{bad}/{action}")
            assert (status, error["error"]["code"]) == (404, "not_found")


async def test_cancel_retry_and_their_conflicts_on_one_instance(fleet: Fleet) -> None:
    web = await fleet.start(
        "web", processors=1, work_min_s=3.0, work_max_s=3.0, failure_rate=0.0, lease_s=30
    )
    s, url = fleet.session, web.url
    running = await created(s, web, "running")
    await wait_status(s, web, running, "in_progress")
    waiting = await created(s, web, "waiting")  # the one processor is busy: stays new

    # new → cancelled at once; again: 200, unchanged.
    status, task = await post(s, f"{url}/tasks/{waiting}/cancel", {"reason": "not needed"})
    assert status == 200
    assert task["status"] == "cancelled"
    assert task["finished_at"] is not None
    assert task["result"] is None
    assert task["error"] is None
    assert task["cancel_requested_at"] is None
    again_status, again = await post(s, f"{url}/tasks/{waiting}/cancel")
    assert (again_status, again) == (200, task)

    # Retry of a running task: 409 with its status.
    status, error = await post(s, f"{url}/tasks/{running}/retry")
    assert status == 409
    assert error["error"]["code"] == "conflict"
    assert error["error"]["details"] == {"status": "in_progress"}

    # in_progress → 202 with the flag, then cancelled by the processor.
    status, task = await post(s, f"{url}/tasks/{running}/cancel", {"reason": "stop it"})
    assert status == 202
    assert task["status"] == "in_progress"
    assert task["cancel_requested_at"] is not None
    done = await wait_status(s, web, running, *FINISHED)
    assert done["status"] == "cancelled"
    assert done["cancel_requested_at"] is None
    assert done["result"] is None
    assert changes(await history(s, web, running)) == [
        ("new", 0),
        ("in_progress", 1),
        ("cancelled", 1),
    ]
    assert (await history(s, web, running))[-1]["reason"] == "stop it"

    await _finished_and_unknown_tasks_are_refused(s, web)

    # Retry: processed again with the next attempt number, the whole history kept.
    status, task = await post(s, f"{url}/tasks/{running}/retry", {"reason": "try again"})
    assert status == 200
    assert task["status"] == "new"
    assert task["attempts"] == 1
    assert task["finished_at"] is None
    assert task["cancel_requested_at"] is None
    done = await wait_status(s, web, running, "completed", "failed")
    assert done["attempts"] == 2
    assert done["result"] is not None
    items = await history(s, web, running)
    assert changes(items) == [
        ("new", 0),
        ("in_progress", 1),
        ("cancelled", 1),
        ("new", 1),
        ("in_progress", 2),
        ("completed", 2),
    ]
    assert [e["reason"] for e in items] == [None, None, "stop it", "try again", None, None]
    metrics = await web.metrics()
    assert value(metrics, "taskflow_cancels_total", outcome="cancelled") == 1
    assert value(metrics, "taskflow_cancels_total", outcome="cancel_requested") == 1
    assert value(metrics, "taskflow_retries_total") == 1
    assert value(metrics, "taskflow_cancel_latency_seconds_count") == 1


async def test_bulk_actions_report_each_id_in_order(fleet: Fleet) -> None:
    web = await fleet.start("web", processors=1, work_min_s=30.0, work_max_s=30.0, failure_rate=0.0)
    s, url = fleet.session, web.url
    running = await created(s, web, "running")
    await wait_status(s, web, running, "in_progress")
    waiting = await created(s, web, "waiting")
    unknown = str(uuid.uuid4())
    ids = [waiting, "nope", running, unknown, waiting, ""]

    status, body = await post(s, f"{url}/tasks/cancel", {"ids": ids, "reason": "bulk"})
    assert status == 200
    assert body["results"] == [
        {"id": waiting, "outcome": "cancelled", "status": "cancelled"},
        {"id": "nope", "outcome": "not_found", "status": None},
        {"id": running, "outcome": "cancel_requested", "status": "in_progress"},
        {"id": unknown, "outcome": "not_found", "status": None},
        {"id": waiting, "outcome": "cancelled", "status": "cancelled"},
        {"id": "", "outcome": "not_found", "status": None},
    ]
    assert (await wait_status(s, web, running, *FINISHED))["status"] == "cancelled"

    status, body = await post(s, f"{url}/tasks/retry", {"ids": [running, unknown, waiting]})
    assert status == 200
    assert body["results"] == [
        {"id": running, "outcome": "retried", "status": "new"},
        {"id": unknown, "outcome": "not_found", "status": None},
        {"id": waiting, "outcome": "retried", "status": "new"},
    ]
    metrics = await web.metrics()  # each task changed counts once, however often it is named
    assert value(metrics, "taskflow_cancels_total", outcome="cancelled") == 1
    assert value(metrics, "taskflow_cancels_total", outcome="cancel_requested") == 1
    assert value(metrics, "taskflow_retries_total") == 2
    # One of them is running again, the other waits: cancel one, retry both again.
    await asyncio.sleep(0.3)
    status, body = await post(s, f"{url}/tasks/retry", {"ids": [running, waiting]})
    assert [r["outcome"] for r in body["results"]] == ["conflict", "conflict"]
    assert {r["status"] for r in body["results"]} <= {"new", "in_progress"}


async def test_bad_bodies_are_422_with_details_per_field(fleet: Fleet) -> None:
    web = await fleet.start("web", processors=1)
    s, url = fleet.session, web.url
    task = await created(s, web, "t")
    too_many = [str(uuid.uuid4()) for _ in range(1001)]
    cases: list[tuple[str, Any, str]] = [
        ("/tasks/cancel", {"ids": []}, "ids"),
        ("/tasks/retry", {"ids": too_many}, "ids"),
        ("/tasks/cancel", {"ids": "abc"}, "ids"),
        ("/tasks/cancel", {"ids": [1, "x"]}, "ids"),
        ("/tasks/retry", {"ids": [None]}, "ids"),
        ("/tasks/cancel", {}, "ids"),
        ("/tasks/cancel", {"ids": [task], "reason": "x" * 501}, "reason"),
        ("/tasks/cancel", {"ids": [task], "force": True}, "force"),
        (f"/tasks/{task}/cancel", {"reason": "x" * 501}, "reason"),
        (f"/tasks/{task}/retry", {"why": "x"}, "why"),
        (f"/tasks/{task}/cancel", {"reason": 5}, "reason"),
        ("/tasks/cancel", [task], "_schema"),
    ]
    for path, body, field in cases:
        status, error = await post(s, url + path, body)
        assert status == 422, (path, body, error)
        assert error["error"]["code"] == "validation_failed"
        assert field in error["error"]["details"], (path, body, error)
    status, error = await post(s, f"{url}/tasks/cancel", raw=b"{not json")
    assert (status, error["error"]["code"]) == (400, "invalid_json")
    async with s.post(f"{url}/tasks/cancel") as response:  # no body at all
        assert response.status == 422
    # None of them changed the task.
    assert (await get(s, f"{url}/tasks/{task}"))["status"] != "cancelled"
    assert reason_of_500(web) == 0


def reason_of_500(service: Service) -> int:
    """How many requests this service answered with a 5xx."""
    return sum(1 for e in service.events(events.HTTP_REQUEST) if int(e["status"]) >= 500)


async def test_a_cancel_on_one_instance_stops_the_attempt_running_on_another(
    fleet: Fleet,
) -> None:
    settings: dict[str, str | float] = {
        "processors": 2,
        "work_min_s": 20.0,
        "work_max_s": 20.0,
        "failure_rate": 0.0,
    }
    a = await fleet.start("a", **settings)
    b = await fleet.start("b", **settings)
    s = fleet.session
    task = await created(s, b, "long")
    await wait_status(s, b, task, "in_progress")
    owner = await lease_owner(fleet.db_url, task)
    holder, other = (a, b) if owner == a.owner else (b, a)

    status, body = await post(s, f"{other.url}/tasks/{task}/cancel")
    assert status == 202, body
    done = await wait_status(s, other, task, *FINISHED, timeout=10)
    assert done["status"] == "cancelled"
    stop = holder.event(STOPPING, task_id=task)
    assert stop["via"] == "notification"
    assert stop["started"] is True
    holder.event("attempt cancelled", task_id=task)
    # The holder's other processor and the pool are untouched: it still takes work.
    another = await created(s, holder, "another")
    await wait_status(s, holder, another, "in_progress")
    # A cancelled task never becomes completed later (its work would have ended by now).
    await asyncio.sleep(1)
    assert changes(await history(s, other, task)) == [
        ("new", 0),
        ("in_progress", 1),
        ("cancelled", 1),
    ]


async def test_a_lost_notification_is_made_up_for_by_the_lease_renewal(fleet: Fleet) -> None:
    web = await fleet.start(
        "web", processors=2, work_min_s=30.0, work_max_s=30.0, failure_rate=0.0, lease_s=3
    )
    s = fleet.session
    task = await created(s, web, "long")
    await wait_status(s, web, task, "in_progress")
    # The cancel request without its notification: as if it had been lost.
    conn = await asyncpg.connect(fleet.db_url, timeout=10)
    try:
        await conn.execute(
            "UPDATE tasks SET cancel_requested_at = clock_timestamp() WHERE id = $1",
            uuid.UUID(task),
        )
    finally:
        await conn.close(timeout=10)
    done = await wait_status(s, web, task, *FINISHED, timeout=10)
    assert done["status"] == "cancelled"
    assert done["attempts"] == 1
    assert web.event(STOPPING, task_id=task)["via"] == "lease_renewal"


async def test_the_listen_connection_cut_before_a_cancel_still_cancels(fleet: Fleet) -> None:
    web = await fleet.start(
        "web", processors=2, work_min_s=30.0, work_max_s=30.0, failure_rate=0.0, lease_s=3
    )
    s = fleet.session
    task = await created(s, web, "long")
    await wait_status(s, web, task, "in_progress")
    conn = await asyncpg.connect(fleet.db_url, timeout=10)
    try:
        # The listener's connection: its last statement was a LISTEN or its health check.
        cut = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND (query LIKE 'LISTEN%' OR query = 'SELECT pg_notification_queue_usage()')"
        )
        assert cut >= 1
    finally:
        await conn.close(timeout=10)
    status, _ = await post(s, f"{web.url}/tasks/{task}/cancel")
    assert status == 202
    done = await wait_status(s, web, task, *FINISHED, timeout=10)
    assert done["status"] == "cancelled"


async def test_a_cancel_racing_the_outcome_leaves_exactly_one_terminal_event(
    fleet: Fleet,
) -> None:
    web = await fleet.start("web", processors=50, work_min_s=0.0, work_max_s=0.2, failure_rate=0.0)
    s = fleet.session
    ids = [await created(s, web, f"t{n}") for n in range(200)]
    outcomes: dict[str, set[str]] = {i: set() for i in ids}
    for _ in range(5):
        status, body = await post(s, f"{web.url}/tasks/cancel", {"ids": ids})
        assert status == 200
        for result in body["results"]:
            outcomes[result["id"]].add(result["outcome"])
        await asyncio.sleep(0.05)
    for task_id in ids:
        task = await wait_status(s, web, task_id, *FINISHED)
        items = await history(s, web, task_id)
        terminal = [e for e in items if e["status"] in FINISHED]
        assert len(terminal) == 1, items
        assert items[-1]["status"] == task["status"]
        if task["status"] == "completed":  # the attempt finished first: never also cancelled
            assert task["result"] is not None
            assert "cancelled" not in outcomes[task_id]
        else:
            assert task["status"] == "cancelled"
            assert task["result"] is None
    await asyncio.sleep(0.5)  # nothing changes afterwards
    for task_id in ids[:20]:
        assert len([e for e in await history(s, web, task_id) if e["status"] in FINISHED]) == 1


async def test_killing_the_holder_of_a_cancel_requested_attempt_ends_it_cancelled(
    fleet: Fleet,
) -> None:
    settings: dict[str, str | float] = {
        "processors": 2,
        "work_min_s": 60.0,
        "work_max_s": 60.0,
        "failure_rate": 0.0,
        "lease_s": 3,
    }
    b = await fleet.start("b", **settings)
    s = fleet.session
    task = await created(s, b, "long")
    await wait_status(s, b, task, "in_progress")
    a = await fleet.start("a", **settings)
    b.signal(SIGKILL)
    await b.wait_exit()
    status, body = await post(s, f"{a.url}/tasks/{task}/cancel", {"reason": "gone"})
    assert status == 202, body
    done = await wait_status(s, a, task, *FINISHED, timeout=20)
    assert done["status"] == "cancelled"
    assert done["attempts"] == 1  # not run again
    items = await history(s, a, task)
    assert changes(items) == [("new", 0), ("in_progress", 1), ("cancelled", 1)]
    assert items[-1]["reason"] == "gone"
    a.event(LAPSED, task_id=task)


async def test_the_cli_cancels_and_retries_and_says_which_ids_failed(fleet: Fleet) -> None:
    web = await fleet.start("web", processors=1, work_min_s=30.0, work_max_s=30.0)
    s = fleet.session
    running = await created(s, web, "running")
    await wait_status(s, web, running, "in_progress")
    waiting = await created(s, web, "waiting")

    async def taskflow(*args: str) -> tuple[int, list[dict[str, Any]]]:
        code, out, err = await run_taskflow(*args, "--url", web.url)
        assert err == ""
        return code, [orjson.loads(line) for line in out.splitlines()]

    code, lines = await taskflow("cancel", waiting, running, "--reason", "cli")
    assert code == 0
    assert [(x["id"], x["outcome"]) for x in lines] == [
        (waiting, "cancelled"),
        (running, "cancel_requested"),
    ]
    await wait_status(s, web, running, "cancelled")
    code, lines = await taskflow("retry", waiting, "nope")
    assert code == 1  # "nope" is not found
    assert [x["outcome"] for x in lines] == ["retried", "not_found"]
    assert (await history(s, web, running))[-1]["reason"] == "cli"
