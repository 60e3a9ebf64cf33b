"""Shared fixtures: a real PostgreSQL database per test, copied from a template.

The template is built once per run by the migrations (procrastinate's trick), so each
test gets a fresh, independent database in milliseconds. Set
`TASKFLOW_TEST_DATABASE_URL` to point the suite at another server (default: the local
one on 127.0.0.1:5432 as `postgres`).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from taskflow.api.protocol import TaskflowRunner
from taskflow.app import create_app
from taskflow.config import Settings
from taskflow.db.migrate import apply_pending

ADMIN_URL = os.environ.get(
    "TASKFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("TASKFLOW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TEMPLATE = f"taskflow_template_{os.getpid()}"

AiohttpClient = Callable[
    [web.Application | TestServer], Awaitable[TestClient[web.Request, web.Application]]
]


def database_url(name: str) -> str:
    """The URL of database `name` on the test server."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await conn.execute(sql, timeout=30)
    finally:
        await conn.close()


async def _build_template() -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{TEMPLATE}"')
    conn = await asyncpg.connect(database_url(TEMPLATE), timeout=10)
    try:
        await apply_pending(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """A database with the schema applied, to copy for each test."""
    asyncio.run(_build_template())
    yield TEMPLATE
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))


@pytest.fixture
async def db_url(template_database: str) -> AsyncIterator[str]:
    """The URL of a fresh database, a copy of the template, dropped after the test."""
    name = f"taskflow_test_{uuid.uuid4().hex[:16]}"
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield database_url(name)
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database, to look at the rows as an operator would."""
    conn = await asyncpg.connect(db_url, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings for a fast pipeline on the test database: no work time, no failures."""
    return replace(
        Settings(),
        database_url=db_url,
        amqp_url=AMQP_URL,
        amqp_queue=f"tasks-test-{uuid.uuid4().hex[:12]}",
        processors=20,
        work_min_s=0.0,
        work_max_s=0.0,
        failure_rate=0.0,
        shutdown_grace_s=2.0,
    )


class TaskflowTestServer(TestServer):
    """aiohttp's `TestServer` with `taskflow serve`'s runner (parser errors as JSON).

    Also as `taskflow serve` runs it, a client that disconnects does not cancel its
    request's handler (aiohttp's test server would): the service notices on its own.
    """

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return TaskflowRunner(self.app, **{**kwargs, "handler_cancellation": False})


class ServeApp(Protocol):
    """The `serve_app` fixture."""

    def __call__(self, app: web.Application, *, port: int | None = None) -> Awaitable[TestServer]:
        """Start `app` on a free port (or `port`)."""
        ...


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """pytest-aiohttp's `aiohttp_server`, with servers that run as `taskflow serve` does
    (`TaskflowTestServer`): for tests that need the server itself, a browser's say."""
    servers: list[TestServer] = []

    async def serve(app: web.Application, *, port: int | None = None) -> TestServer:
        server = TaskflowTestServer(app, port=port)
        await server.start_server()
        servers.append(server)
        return server

    yield serve
    while servers:
        await servers.pop().close()


@pytest.fixture
def make_client(
    db_url: str,
    aiohttp_client: AiohttpClient,
) -> Callable[[Settings], Awaitable[TestClient[web.Request, web.Application]]]:
    """Start the whole application for some settings and return a client to it.

    It depends on `db_url` first so that the database outlives the application.
    """

    async def make(settings: Settings) -> TestClient[web.Request, web.Application]:
        return await aiohttp_client(TaskflowTestServer(create_app(settings, poll_s=0.05)))

    return make


@pytest.fixture
async def client(
    make_client: Callable[[Settings], Awaitable[TestClient[web.Request, web.Application]]],
    settings: Settings,
) -> TestClient[web.Request, web.Application]:
    """A client to the application with the default test settings."""
    return await make_client(settings)
