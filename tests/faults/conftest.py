"""Fixtures of the fault tests: real `taskflow serve` processes and TCP proxies.

Every process a test starts is SIGKILLed and reaped in teardown, whatever happened, and
its log is written to the test's `tmp_path` (pytest keeps the last runs) for post-mortems.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from taskflow_bench.harness.broker import delete_queues
from taskflow_bench.harness.environment import service_environment
from taskflow_bench.harness.service import RAW, Service
from tests.conftest import AMQP_URL
from tests.integration.proxy import TcpProxy


class Fleet:
    """Starts services on one database; remembers them so teardown can kill them."""

    def __init__(self, db_url: str, session: aiohttp.ClientSession, log_dir: Path) -> None:
        self.db_url = db_url
        self.session = session
        self.amqp_queue = f"tasks-test-{uuid.uuid4().hex[:12]}"
        self.services: list[Service] = []
        self._log_dir = log_dir

    def environment(self, **settings: str | float) -> dict[str, str]:
        """The environment of a service: test defaults, then `settings` (by setting name)."""
        defaults: dict[str, str | float] = {
            "database_url": self.db_url,
            "amqp_url": AMQP_URL,
            "amqp_queue": self.amqp_queue,
            "host": "127.0.0.1",
            "log_format": "json",
            "log_level": "info",
            "failure_rate": 0.1,
        }
        return service_environment({**defaults, **settings})

    async def launch(self, name: str, **settings: str | float) -> Service:
        """Start a service without waiting for it."""
        service = await Service.start(name, self.environment(**settings))
        self.services.append(service)
        return service

    async def start(self, name: str, **settings: str | float) -> Service:
        """Start a service and wait until it is ready."""
        service = await self.launch(name, **settings)
        await service.wait_ready()
        return service

    async def close(self) -> None:
        """Kill and reap every service; keep their logs; fail on any error they logged.

        No fault here is a reason for taskflow to log an error: outages, takeovers and
        fenced writes are warnings. An error-level line means something went wrong.
        """
        for service in self.services:
            await service.kill()
        await delete_queues(AMQP_URL, [self.amqp_queue])
        errors = []
        for n, service in enumerate(self.services):
            (self._log_dir / f"{n}-{service.name}.log").write_text(service.output)
            errors += [
                f"{service.name}: {e}"
                for e in service.logs
                if e.get("level") in ("error", "critical") or e.get("event") == RAW
            ]
            errors += [f"{service.name} printed: {line}" for line in service.printed]
        assert not errors, "services logged errors:\n" + "\n".join(errors[:20])


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for talking to the services."""
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as client:
        yield client


@pytest.fixture
async def fleet(
    db_url: str, session: aiohttp.ClientSession, tmp_path: Path
) -> AsyncIterator[Fleet]:
    """Starts `taskflow serve` processes on the test's database; kills them afterwards."""
    fleet = Fleet(db_url, session, tmp_path)
    try:
        yield fleet
    finally:
        await fleet.close()


def _through(url: str, proxy: TcpProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    credentials, _, _ = parts.netloc.rpartition("@")
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}" if credentials else host))


@asynccontextmanager
async def _proxied(url: str, default_port: int) -> AsyncIterator[tuple[TcpProxy, str]]:
    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    await proxy.start()
    try:
        yield proxy, _through(url, proxy)
    finally:
        await proxy.stop()


@pytest.fixture
async def pg_proxy(db_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of the test's PostgreSQL, and the database URL through it."""
    async with _proxied(db_url, 5432) as proxied:
        yield proxied


@pytest.fixture
async def amqp_proxy() -> AsyncIterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of the test RabbitMQ, and the AMQP URL through it."""
    async with _proxied(AMQP_URL, 5672) as proxied:
        yield proxied
