"""`taskflow serve` with no DATABASE_URL: an embedded PostgreSQL, as a newcomer runs it.

Each test starts the real command in a subprocess, with a temporary TASKFLOW_DATA_DIR and
AMQP_URL pointing at a port where no broker listens (so the service serves HTTP alone).
"""

from __future__ import annotations

import asyncio
import pathlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout

from taskflow_bench.harness import events
from taskflow_bench.harness.service import RAW, Service
from taskflow_bench.harness.tasks import wait_terminal
from tests.integration.embedded import SERVE, postgres_processes, private_data_dir, service_env

BRINGS_UP = (events.EMBEDDED_STARTED, events.EMBEDDED_JOINED)  # one instance each

StartService = Callable[[dict[str, str]], Awaitable[Service]]


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    """An HTTP client with a bound on every request."""
    async with ClientSession(timeout=ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def pgdata() -> Iterator[pathlib.Path]:
    """Where this test's embedded server keeps its data (see `private_data_dir`)."""
    with private_data_dir() as path:
        yield path


@pytest.fixture
async def start_service(
    tmp_path: pathlib.Path, pgdata: pathlib.Path
) -> AsyncIterator[StartService]:
    """Start `taskflow serve` processes in tmp_path; whatever a failed test leaves running is
    stopped (the processes here, a server on pgdata by `private_data_dir`)."""
    started: list[Service] = []

    async def start(env: dict[str, str]) -> Service:
        service = await Service.start(f"serve-{len(started)}", env, argv=SERVE, cwd=tmp_path)
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


async def create_task(http: ClientSession, service: Service, title: str) -> dict[str, Any]:
    async with http.post(f"{service.url}/tasks", json={"title": title}) as response:
        assert response.status == 201, await response.text()
        task: dict[str, Any] = await response.json()
        return task


async def get_task(http: ClientSession, service: Service, task_id: str) -> dict[str, Any]:
    async with http.get(f"{service.url}/tasks/{task_id}") as response:
        assert response.status == 200, await response.text()
        task: dict[str, Any] = await response.json()
        return task


async def finished(service: Service, task_id: str) -> dict[str, Any]:
    async with service.client() as client:
        return await wait_terminal(client, task_id, timeout=60)


async def test_serve_without_database_url_keeps_tasks_in_an_embedded_postgres(
    pgdata: pathlib.Path, http: ClientSession, start_service: StartService
) -> None:
    env = service_env(pgdata)

    first = await start_service(env)
    ready = await first.wait_ready()
    assert ready["status"] == "ready"
    assert ready["database"] == {"mode": "embedded", "ok": True}
    # No broker answers on AMQP_URL: the service is ready and serves HTTP alone.
    assert ready["amqp"]["state"] in ("connecting", "disconnected")
    assert first.event(events.EMBEDDED_IN_USE)["data_dir"] == str(pgdata)
    started = first.event(events.EMBEDDED_STARTED)
    assert started["data_dir"] == str(pgdata)
    assert postgres_processes(pgdata), "the server runs on the data directory"

    task = await create_task(http, first, "resize")
    done = await finished(first, task["id"])
    assert done["status"] == "completed"
    assert done["attempts"] == 1

    assert await first.stop() == 0, first.output
    assert first.event(events.WAITING_FOR_BROKER)["level"] == "warning"  # once, not per attempt
    assert first.event(events.EMBEDDED_STOPPED)["data_dir"] == str(pgdata)
    assert not postgres_processes(pgdata), "the server stopped with its only user"
    assert not (pgdata / "postmaster.pid").exists()

    second = await start_service(env)
    await second.wait_ready()
    assert second.event(events.EMBEDDED_STARTED)["data_dir"] == str(pgdata)
    assert await get_task(http, second, task["id"]) == done
    assert await second.stop() == 0, second.output
    assert not postgres_processes(pgdata)


async def test_two_instances_on_one_data_dir_share_the_server_and_the_work(
    pgdata: pathlib.Path, http: ClientSession, start_service: StartService
) -> None:
    a, b = await asyncio.gather(
        start_service(service_env(pgdata)), start_service(service_env(pgdata))
    )
    await asyncio.gather(a.wait_ready(), b.wait_ready())
    joins = [e for s in (a, b) for name in BRINGS_UP for e in s.events(name)]
    assert sorted(e["event"] for e in joins) == sorted(BRINGS_UP)
    assert joins[0]["server_pid"] == joins[1]["server_pid"], "one server for both"
    assert len(postgres_processes(pgdata)) >= 1

    created = await asyncio.gather(
        *(create_task(http, service, f"task {i}") for i in range(10) for service in (a, b))
    )
    for task in created:
        # Every task is seen completed from both instances, whichever one it was created on.
        for service in (a, b):
            assert (await finished(service, task["id"]))["status"] == "completed"
    for service in (a, b):
        async with http.get(f"{service.url}/tasks", params={"limit": "100"}) as response:
            listed = {t["id"] for t in (await response.json())["items"]}
        assert listed == {t["id"] for t in created}

    assert await a.stop() == 0, a.output
    assert a.event(events.EMBEDDED_LEFT)
    task = await create_task(http, b, "after a left")
    assert (await finished(b, task["id"]))["status"] == "completed"
    assert await b.stop() == 0, b.output
    assert b.event(events.EMBEDDED_STOPPED)
    assert not postgres_processes(pgdata)


async def test_with_database_url_no_embedded_server_is_started(
    pgdata: pathlib.Path, http: ClientSession, start_service: StartService, db_url: str
) -> None:
    service = await start_service(service_env(pgdata, database_url=db_url))
    ready = await service.wait_ready()
    assert ready["database"] == {"mode": "external", "ok": True}
    task = await create_task(http, service, "external")
    assert (await finished(service, task["id"]))["status"] == "completed"
    assert await service.stop() == 0, service.output

    assert not await asyncio.to_thread(pgdata.exists), "no data directory is created"
    assert not postgres_processes(pgdata)
    assert not [e for e in service.events() if "embedded" in e["event"].lower()]


@pytest.fixture(params=["non-empty directory", "file"])
def occupied(request: pytest.FixtureRequest, pgdata: pathlib.Path) -> pathlib.Path:
    """A TASKFLOW_DATA_DIR that already holds something else."""
    if request.param == "file":
        pgdata.write_text("not a database")
    else:
        pgdata.mkdir()
        (pgdata / "notes.txt").write_text("not a database")
    return pgdata


async def test_a_failed_embedded_start_stops_serve_with_one_clear_line(
    occupied: pathlib.Path, start_service: StartService
) -> None:
    pgdata = occupied
    service = await start_service(service_env(pgdata))
    assert await service.wait_exit() == 1, service.output

    errors = [e for e in service.events() if e["level"] in ("error", "critical")]
    assert len(errors) == 1, service.output
    message = errors[0]["error"]
    assert message.startswith(f"embedded PostgreSQL in {pgdata} could not start: ")
    assert "set DATABASE_URL" in message
    assert "\n" not in message
    assert "Traceback" not in service.output
    assert not service.events(RAW), "JSON lines only"
    assert not service.printed
    assert not postgres_processes(pgdata)


async def test_sigterm_while_the_embedded_server_starts_leaves_none_running(
    pgdata: pathlib.Path, start_service: StartService
) -> None:
    service = await start_service(service_env(pgdata))
    async with asyncio.timeout(60):
        while not service.events(events.EMBEDDED_IN_USE):
            assert service.running, service.output
            await asyncio.sleep(0.01)
    # The first start runs initdb and then starts the server: the signal lands in there. The
    # start is let finish, and the server it started is stopped again.
    assert await service.stop(signal.SIGTERM) == 0, service.output
    assert service.event(events.EMBEDDED_STOPPED)["data_dir"] == str(pgdata)
    assert not postgres_processes(pgdata), service.output
    assert not (pgdata / "postmaster.pid").exists()
